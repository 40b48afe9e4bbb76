package wire

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// panicky panics when asked to route "boom", and answers everything else
// from the server with no upstream.
type panicky struct{}

func (panicky) Route(_ context.Context, _ *Session, sql string) (Handler, error) {
	if sql == "boom" {
		panic("router bug")
	}
	return Local(constStatement{}), nil
}

type constStatement struct{}

func (constStatement) Describe(context.Context, *Session, []uint32) (Description, error) {
	return Description{ParamOIDs: []uint32{}}, nil
}

func (constStatement) Execute(context.Context, *Session, Params, *RowWriter) (string, error) {
	return "SELECT 0", nil
}

// A panic in the layers above wire ends only the session that hit it: the
// client gets FATAL XX000, and the server keeps serving everyone else.
func TestPanicIsContainedToItsSession(t *testing.T) {
	p := startProxy(t, Config{}, panicky{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bystander := connect0(t, p.dsn("", ""))
	for name, run := range map[string]func() error{
		"simple": func() error {
			_, err := connect0(t, p.dsn("", "")).PgConn().Exec(ctx, "boom").ReadAll()
			return err
		},
		"extended": func() error {
			_, err := connect0(t, p.dsn("", "")).Exec(ctx, "boom")
			return err
		},
	} {
		err := run()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != CodeInternalError || pe.Severity != "FATAL" {
			t.Fatalf("%s protocol: panicking statement gave %v, want FATAL XX000", name, err)
		}
	}
	if _, err := bystander.Exec(ctx, "fine"); err != nil {
		t.Fatalf("another session failed after the panic: %v", err)
	}
	fresh := connect0(t, p.dsn("", ""))
	if _, err := fresh.Exec(ctx, "fine"); err != nil {
		t.Fatalf("a new session failed after the panic: %v", err)
	}
}
