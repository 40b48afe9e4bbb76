package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PrivatePostgres is a PostgreSQL server of one test's own, for tests that
// stop or restart their upstream (the shared server must stay up for the
// other packages testing in parallel).
type PrivatePostgres struct {
	DSN  string
	t    testing.TB
	bin  string
	data string
	log  string
	port int
	asPG []string
}

// StartPrivatePostgres initialises and starts a server on a free loopback
// port below the ephemeral range (so that it can be restarted on it under
// load), with trust authentication; it is stopped when the test ends.
func StartPrivatePostgres(t testing.TB) *PrivatePostgres {
	t.Helper()
	p := &PrivatePostgres{t: t, bin: PostgresBinDir(t)}
	dir, err := os.MkdirTemp("", "kvproxy-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p.data, p.log = filepath.Join(dir, "data"), filepath.Join(dir, "pg.log")
	if os.Getuid() == 0 {
		// PostgreSQL refuses to run as root; the harness has created the
		// postgres system user.
		if err := exec.Command("chown", "-R", "postgres", dir).Run(); err != nil {
			t.Fatalf("chown %s: %v", dir, err)
		}
		p.asPG = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := p.cmd(filepath.Join(p.bin, "initdb"), "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	for try := 0; ; try++ {
		p.port = 20000 + int(time.Now().UnixNano()%10000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port)); err == nil {
			l.Close()
			if err := p.Start(); err == nil {
				break
			} else if try == 4 {
				t.Fatal(err)
			}
		}
	}
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	t.Cleanup(func() { _ = p.cmd(filepath.Join(p.bin, "pg_ctl"), "-D", p.data, "-m", "immediate", "-w", "stop").Run() })
	return p
}

func (p *PrivatePostgres) cmd(name string, args ...string) *exec.Cmd {
	all := append(append([]string{}, p.asPG...), name)
	all = append(all, args...)
	return exec.Command(all[0], all[1:]...)
}

// Start starts the (stopped) server and waits until it accepts connections.
func (p *PrivatePostgres) Start() error {
	out, err := p.cmd(filepath.Join(p.bin, "pg_ctl"), "-D", p.data, "-w", "-t", "60", "-l", p.log,
		"-o", fmt.Sprintf("-p %d -k '' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300", p.port), "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(p.log)
		return fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server (fast shutdown: sessions are terminated).
func (p *PrivatePostgres) Stop() error {
	if out, err := p.cmd(filepath.Join(p.bin, "pg_ctl"), "-D", p.data, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// Ping reports whether the server answers.
func (p *PrivatePostgres) Ping(ctx context.Context) error {
	c, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}
