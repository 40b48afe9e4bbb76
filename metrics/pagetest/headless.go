// Package pagetest runs headless Chromium for the status page tests: it
// finds (or, as root, installs) the browser and runs it with a fresh
// profile, no network services of its own, and a hard deadline.
package pagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func find() string {
	// The names Debian and other distributions use.
	for _, c := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	return ""
}

// Chromium returns the browser's path. When it is missing it installs the
// Debian package chromium if running as root (as make test does in CI),
// fails if root has no apt-get, and skips the test otherwise.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := find(); p != "" {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skip("headless Chromium not found and not root: install it with `apt-get install -y chromium` (Debian package chromium) to run the status page test")
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		t.Fatal("headless Chromium not found and apt-get is unavailable: install Chromium (Debian/Ubuntu package chromium, or chromium-browser / google-chrome) so that `chromium` is on PATH")
	}
	install := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		// Lock::Timeout waits for another test package installing at the
		// same time instead of failing on the dpkg lock.
		cmd := exec.CommandContext(ctx, apt, append([]string{"-o", "DPkg::Lock::Timeout=600", "-y", "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %v: %w\n%s", args, err, out)
		}
		return nil
	}
	t.Log("headless Chromium not found; installing the Debian package chromium")
	if err := install("install", "chromium"); err != nil {
		if err2 := install("update"); err2 != nil {
			t.Fatalf("install chromium: %v; apt-get update: %v", err, err2)
		}
		if err := install("install", "chromium"); err != nil {
			t.Fatalf("install chromium (apt-get install -y chromium): %v", err)
		}
	}
	if p := find(); p != "" {
		return p
	}
	t.Fatal("apt-get installed chromium but no chromium binary is on PATH")
	return ""
}

// run starts the browser on url with extra arguments and returns stdout.
func run(t testing.TB, bin, url string, extra ...string) []byte {
	t.Helper()
	profile := t.TempDir()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile,
		// Virtual time runs the page's fetch and first refreshes before the
		// DOM is dumped, without the test sleeping.
		"--virtual-time-budget=8000",
		"--window-size=1280,1000", "--hide-scrollbars",
	}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	// Chromium forks helpers; kill the whole group so none outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // stray helpers
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("chromium did not finish within 2 minutes\n%s", tail(stderr.Bytes()))
		}
		t.Fatalf("chromium %v: %v\n%s", extra, err, tail(stderr.Bytes()))
	}
	return stdout.Bytes()
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}

// DumpDOM loads url and returns the DOM after its scripts have run.
func DumpDOM(t testing.TB, bin, url string) string {
	t.Helper()
	return string(run(t, bin, url, "--dump-dom"))
}

// Screenshot loads url, saves a PNG and checks that it decodes to the
// window size. The file goes to $KVPROXY_TEST_SCREENSHOT_DIR/name when that is
// set (to look at it), else into the test's temp folder. It returns the
// path and the image.
func Screenshot(t testing.TB, bin, url, name string) (string, image.Image) {
	t.Helper()
	dir := os.Getenv("KVPROXY_TEST_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	run(t, bin, url, "--screenshot="+path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot written: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1000 {
		t.Fatalf("screenshot is %dx%d, want 1280x1000", b.Dx(), b.Dy())
	}
	t.Logf("screenshot: %s", path)
	return path, img
}

// CountColor counts the pixels of img within tol (per 8-bit channel) of the
// colour 0xRRGGBB.
func CountColor(img image.Image, rgb uint32, tol int) int {
	want := [3]int{int(rgb >> 16 & 0xff), int(rgb >> 8 & 0xff), int(rgb & 0xff)}
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			got := [3]int{int(r >> 8), int(g >> 8), int(bl >> 8)}
			ok := true
			for i := range got {
				if d := got[i] - want[i]; d > tol || d < -tol {
					ok = false
				}
			}
			if ok {
				n++
			}
		}
	}
	return n
}
