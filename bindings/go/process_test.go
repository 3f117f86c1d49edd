// Tests of process streams (Context.Start); run with the rest by go.test
// and go.race.
package spore_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"spore.dev/spore"
)

// pidAlive reports whether pid runs (a zombie does not count).
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

func requirePidGone(t *testing.T, pid int) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for pidAlive(pid) && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
	if pidAlive(pid) {
		t.Fatalf("process %d still runs", pid)
	}
}

func start(t *testing.T, c *spore.Context, argv []string, opts ...spore.ProcessOption) *spore.Process {
	t.Helper()
	p, err := c.Start(bg(t), argv, opts...)
	if err != nil {
		t.Fatalf("Start %v: %v", argv, err)
	}
	t.Cleanup(func() { p.Close() })
	if p.Pid() <= 1 {
		t.Fatalf("pid %d", p.Pid())
	}
	return p
}

func waitStatus(t *testing.T, p *spore.Process) spore.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return st
}

// readUntil reads r until what it read contains want, for at most 10 s
// (the reads go on in a goroutine, which ends with the process).
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []byte
	)
	found := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			seen = append(seen, buf[:n]...)
			hit := bytes.Contains(seen, []byte(want))
			mu.Unlock()
			if hit {
				close(found)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-found:
	case <-time.After(10 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no %q in the output: %q", want, seen)
	}
	mu.Lock()
	defer mu.Unlock()
	return string(seen)
}

func TestProcessCatBothWays(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	l := must(r.Local(ctx, nil))
	f := must(r.Fork(ctx, l, nil))
	blob := make([]byte, 3<<20+7)
	rand.New(rand.NewSource(2)).Read(blob)
	for _, c := range []*spore.Context{l, f} {
		p := start(t, c, []string{"cat"})
		werr := make(chan error, 1)
		go func() {
			// in uneven pieces, as io.Copy does them
			_, err := io.Copy(p.Stdin(), bytes.NewReader(blob))
			if err == nil {
				err = p.Stdin().Close()
			}
			werr <- err
		}()
		out, err := io.ReadAll(p.Stdout())
		if err != nil {
			t.Fatalf("%s: reading: %v", c, err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("%s: writing: %v", c, err)
		}
		if !bytes.Equal(out, blob) {
			t.Fatalf("%s: %d bytes came back of %d, or different ones", c, len(out), len(blob))
		}
		st := waitStatus(t, p)
		if !st.Success() || !st.Exited() || st.Code != 0 || st.String() != "exit status 0" {
			t.Fatalf("status code %d signal %d: %s", st.Code, int(st.Signal), st)
		}
		// The ends, again.
		if n, err := p.Stdout().Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("read after the end: %d %v", n, err)
		}
		if b, err := io.ReadAll(p.Stderr()); err != nil || len(b) != 0 {
			t.Fatalf("stderr %q %v", b, err)
		}
		if _, err := p.Stdin().Write([]byte("late")); !errors.Is(err, spore.ErrInvalid) &&
			!errors.Is(err, spore.ErrDisconnected) {
			t.Fatalf("write after close: %v", err)
		}
		p.Close()
		p.Close()
		if _, err := p.Stdout().Read(make([]byte, 1)); !errors.Is(err, spore.ErrInvalid) {
			t.Fatalf("read of a closed process: %v", err)
		}
		if _, err := p.Wait(ctx); err != nil {
			// the status was known before the close
			t.Fatalf("wait of a closed process that had ended: %v", err)
		}
		if err := p.Signal(syscall.SIGTERM); !errors.Is(err, spore.ErrInvalid) {
			t.Fatalf("signal to a closed process: %v", err)
		}
	}
}

func TestProcessFlowControl(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"cat"}, spore.WithWindow(64<<10))
	const total = 64 << 20
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("z"), 64<<10)
		for written.Load() < total {
			if _, err := p.Stdin().Write(chunk); err != nil {
				werr <- err
				return
			}
			written.Add(int64(len(chunk)))
		}
		werr <- p.Stdin().Close()
	}()
	// Nobody reads stdout: the writer stops after a few windows and pipe
	// buffers instead of queueing everything somewhere.
	time.Sleep(time.Second)
	held := written.Load()
	if held >= 8<<20 {
		t.Fatalf("a writer without a reader got %d bytes through", held)
	}
	select {
	case err := <-werr:
		t.Fatalf("the writer returned without a reader: %v", err)
	default:
	}
	t.Logf("a writer without a reader stopped after %d KiB", held>>10)
	// Once it is read, everything flows.
	n, err := io.Copy(io.Discard, p.Stdout())
	if err != nil || n != total {
		t.Fatalf("read %d bytes of %d: %v", n, total, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writer: %v", err)
	}
	if st := waitStatus(t, p); !st.Success() {
		t.Fatalf("status %s", st)
	}
}

func TestProcessStderrEnvDirAndExitStatus(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, c, nil, spore.WithShell(`echo out; echo err >&2; echo "$FOO"; pwd; echo "${HOME-unset}"; exit 3`),
		spore.WithEnv(map[string]string{"FOO": "bar baz"}), spore.WithoutEnv("HOME"), spore.WithDir(dir))
	var lines []string
	sc := bufio.NewScanner(p.Stdout())
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"out", "bar baz", dir, "unset"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("stdout %q, want %q", lines, want)
	}
	if b := must(io.ReadAll(p.Stderr())); string(b) != "err\n" {
		t.Fatalf("stderr %q", b)
	}
	st := waitStatus(t, p)
	if st.Code != 3 || st.Signal != 0 || st.Success() || !st.Exited() || st.String() != "exit status 3" {
		t.Fatalf("status code %d signal %d: %s", st.Code, int(st.Signal), st)
	}

	p = start(t, c, []string{"/usr/bin/env"}, spore.WithCleanEnv(), spore.WithEnv(map[string]string{"ONLY": "1"}))
	if b := must(io.ReadAll(p.Stdout())); string(b) != "ONLY=1\n" {
		t.Fatalf("a clean environment: %q", b)
	}

	_, err = c.Start(ctx, []string{"/nonexistent/spore-prog"})
	var e *spore.Error
	if !errors.As(err, &e) || e.Code != spore.ErrRemote || e.RemoteType != "FileNotFoundError" {
		t.Fatalf("a program that does not exist: %v", err)
	}
	if _, err := c.Start(ctx, []string{"cat"}, spore.WithWindow(1)); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("a window of 1 byte: %v", err)
	}
	if _, err := c.Start(ctx, nil); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("neither argv nor a shell: %v", err)
	}
	if _, err := c.Start(ctx, []string{"echo"}, spore.WithShell("echo")); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("argv and a shell: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Start(cancelled, []string{"cat"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled start: %v", err)
	}
}

type notASignal struct{}

func (notASignal) String() string { return "not a signal" }
func (notASignal) Signal()        {}

// processesWithArg counts the live processes with arg in their argv.
func processesWithArg(arg string) int {
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, w := range strings.Split(string(b), "\x00") {
			if w == arg {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
				if pidAlive(pid) {
					n++
				}
				break
			}
		}
	}
	return n
}

// A Start cancelled while under way returns at once; a process that
// started meanwhile is killed, and nothing is left running. A deadline
// gives ErrTimedOut, matching context.DeadlineExceeded too.
func TestProcessStartCancelled(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	const marker = "1001.25"
	cancelled := 0
	for i := 0; i < 20; i++ {
		cctx, cancel := context.WithCancel(ctx)
		go func(d time.Duration) {
			time.Sleep(d)
			cancel()
		}(time.Duration(i%5) * 100 * time.Microsecond)
		p, err := c.Start(cctx, []string{"sleep", marker})
		switch {
		case err == nil:
			p.Close()
		case errors.Is(err, context.Canceled):
			cancelled++
		default:
			t.Fatalf("start %d: %v", i, err)
		}
		cancel()
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Millisecond)
	p, err := c.Start(dctx, []string{"sleep", marker})
	dcancel()
	if err == nil {
		p.Close()
	} else if !errors.Is(err, spore.ErrTimedOut) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("start with a 1 ms deadline: %v", err)
	}
	// A cancelled start may still be under way in the agent; wait for the
	// binding to have dropped whatever it returned before counting.
	spore.WaitAbandoned()
	end := time.Now().Add(10 * time.Second)
	for processesWithArg(marker) > 0 && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := processesWithArg(marker); n > 0 {
		t.Fatalf("%d started processes left running (%d starts cancelled)", n, cancelled)
	}
	t.Logf("%d of 20 starts were cancelled under way", cancelled)
	// The context still works.
	p = start(t, c, []string{"true"})
	if st := waitStatus(t, p); !st.Success() {
		t.Fatalf("status %s", st)
	}
}

// Starts under way in goroutines when the router closes: the agent's exit
// waits for starts in progress and kills what they started, so no process
// is left behind, not even one reparented to init (which the check at the
// end of each test, of this process's descendants, would not see).
func TestProcessStartsUnderWayAtClose(t *testing.T) {
	ctx := bg(t)
	const marker = "1001.5"
	for round := 0; round < 6; round++ {
		r, err := spore.NewRouter()
		if err != nil {
			t.Fatal(err)
		}
		c := must(r.Local(ctx, nil))
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if p, err := c.Start(ctx, []string{"sleep", marker}); err == nil {
					p.Close()
				}
			}()
		}
		time.Sleep(time.Duration(round) * 400 * time.Microsecond)
		r.Close()
		wg.Wait()
	}
	end := time.Now().Add(10 * time.Second)
	for processesWithArg(marker) > 0 && time.Now().Before(end) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := processesWithArg(marker); n > 0 {
		t.Fatalf("%d processes started during Close were left running", n)
	}
}

func TestProcessSignals(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"sleep", "100"})
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := p.Wait(short)
	cancel()
	if !errors.Is(err, spore.ErrTimedOut) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for a process that runs on: %v", err)
	}
	if err := p.Signal(notASignal{}); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("a signal of another type: %v", err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, p)
	if st.Signal != syscall.SIGTERM || st.Code != -1 || st.Exited() || st.Success() || st.String() != "signal: terminated" {
		t.Fatalf("status code %d signal %d: %s", st.Code, int(st.Signal), st)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("a signal to an ended process: %v", err)
	}
	if err := p.Resize(10, 10); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("resize of an ended process: %v", err)
	}
	p = start(t, c, []string{"sleep", "100"})
	if err := p.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, p); st.Signal != syscall.SIGKILL {
		t.Fatalf("status %s", st)
	}
}

func TestProcessPtySizeAndResize(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"/bin/sh"}, spore.WithPty(40, 100))
	if _, err := io.WriteString(p.Stdin(), "tty; stty size\n"); err != nil {
		t.Fatal(err)
	}
	if seen := readUntil(t, p.Stdout(), "40 100"); !strings.Contains(seen, "/dev/pts/") {
		t.Fatalf("no tty in %q", seen)
	}
	if err := p.Resize(50, 120); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(p.Stdin(), "stty size\n"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, p.Stdout(), "50 120")
	if err := p.Resize(0, 10); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("a size of 0 rows: %v", err)
	}
	if err := p.Stdin().Close(); err != nil { // ^D: the shell exits
		t.Fatal(err)
	}
	if st := waitStatus(t, p); !st.Success() {
		t.Fatalf("status %s", st)
	}
	if _, err := io.ReadAll(p.Stdout()); err != nil {
		t.Fatal(err)
	}
	if b := must(io.ReadAll(p.Stderr())); len(b) != 0 {
		t.Fatalf("stderr of a pty %q", b)
	}
	p = start(t, c, []string{"cat"})
	if err := p.Resize(30, 30); !errors.Is(err, spore.ErrInvalid) {
		t.Fatalf("resize without a pty: %v", err)
	}
}

func TestProcessStdinCloseIsEOF(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"wc", "-c"})
	zeros := make([]byte, 64<<10)
	for i := 0; i < 32; i++ {
		if n, err := p.Stdin().Write(zeros); err != nil || n != len(zeros) {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
	}
	if n, err := p.Stdin().Write(nil); n != 0 || err != nil {
		t.Fatalf("an empty write: %d %v", n, err)
	}
	if err := p.Stdin().Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stdin().Close(); err != nil {
		t.Fatalf("a second close: %v", err)
	}
	if b := must(io.ReadAll(p.Stdout())); strings.TrimSpace(string(b)) != "2097152" {
		t.Fatalf("wc -c said %q", b)
	}
	if st := waitStatus(t, p); !st.Success() {
		t.Fatalf("status %s", st)
	}
}

// A read deadline ends a waiting Read (os.ErrDeadlineExceeded) without
// losing what comes afterwards; the zero time removes it.
func TestProcessReadDeadline(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"cat"})
	out := p.Stdout()
	buf := make([]byte, 64)
	if err := out.SetReadDeadline(time.Now().Add(150 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	n, err := out.Read(buf)
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %d %v", n, err)
	}
	if d := time.Since(t0); d < 140*time.Millisecond || d > 2*time.Second {
		t.Fatalf("the deadline ended the read after %v", d)
	}
	// A deadline in the past: at once.
	if err := out.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := out.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a past deadline: %v", err)
	}
	// A deadline set while a Read waits ends that Read.
	if err := out.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := out.Read(buf)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := out.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := errWithin(t, done, 5*time.Second, "a new deadline did not end the waiting read"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the waiting read: %v", err)
	}
	// Nothing is lost: without a deadline the data comes.
	if err := out.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(p.Stdin(), "hello\n"); err != nil {
		t.Fatal(err)
	}
	if err := p.Stdin().Close(); err != nil {
		t.Fatal(err)
	}
	if b := must(io.ReadAll(out)); string(b) != "hello\n" {
		t.Fatalf("cat said %q", b)
	}
	if st := waitStatus(t, p); !st.Success() {
		t.Fatalf("status %s", st)
	}
}

func TestProcessWriteAfterExitFails(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"true"})
	waitStatus(t, p)
	if _, err := p.Stdin().Write([]byte("x")); !errors.Is(err, spore.ErrDisconnected) {
		t.Fatalf("a write to an exited process: %v", err)
	}
	// Without a Wait: once the exit is known, writes fail too.
	p = start(t, c, []string{"sh", "-c", "exit"})
	end := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(end) {
		_, err = p.Stdin().Write([]byte("x"))
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(err, spore.ErrDisconnected) {
		t.Fatalf("writes to an exited process: %v", err)
	}
}

func TestProcessCloseWhileRunningLeavesNothing(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := must(c.Start(ctx, nil, spore.WithShell("sleep 100 & sleep 100; wait")))
	pid := p.Pid()
	if !pidAlive(pid) {
		t.Fatalf("process %d does not run", pid)
	}
	p.Close()
	requirePidGone(t, pid)

	// Goroutines inside a Read, a Write and a Wait get out when it is closed.
	p = must(c.Start(ctx, []string{"cat"}))
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		p.Stderr().Read(make([]byte, 10))
	}()
	go func() {
		defer wg.Done()
		p.Stdin().Write(make([]byte, 32<<20)) // more than the windows hold: it waits
	}()
	go func() {
		defer wg.Done()
		p.Wait(ctx)
	}()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	p.Close()
	wg.Wait()
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("close took %v", d)
	}
	requirePidGone(t, p.Pid())

	// The garbage collector frees (and so kills) a process nobody holds.
	pid = func() int { return must(c.Start(ctx, []string{"sleep", "100"})).Pid() }()
	end := time.Now().Add(10 * time.Second)
	for pidAlive(pid) && time.Now().Before(end) {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	if pidAlive(pid) {
		t.Fatalf("a collected process %d still runs", pid)
	}
	if _, err := c.Call(ctx, "sys.ping", nil); err != nil {
		t.Fatalf("the context after all that: %v", err)
	}
}

// Several goroutines write, read and wait on one process at once (go.race
// checks the layer's locking).
func TestProcessFromGoroutines(t *testing.T) {
	ctx := bg(t)
	r := newRouter(t)
	c := must(r.Local(ctx, nil))
	p := start(t, c, []string{"cat"})
	const writers, lines = 4, 500
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				// each line in one Write: writes do not mix
				if _, err := io.WriteString(p.Stdin(), "w"+strconv.Itoa(w)+" "+strconv.Itoa(i)+"\n"); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}(w)
	}
	statuses := make(chan spore.ExitStatus, 2)
	for i := 0; i < 2; i++ {
		go func() {
			st, err := p.Wait(ctx)
			if err != nil {
				t.Errorf("Wait: %v", err)
			}
			statuses <- st
		}()
	}
	go func() {
		wg.Wait()
		p.Stdin().Close()
	}()
	// two readers take turns on stdout
	var mu sync.Mutex
	var all []byte
	var rg sync.WaitGroup
	for i := 0; i < 2; i++ {
		rg.Add(1)
		go func() {
			defer rg.Done()
			buf := make([]byte, 7)
			for {
				n, err := p.Stdout().Read(buf)
				mu.Lock()
				all = append(all, buf[:n]...)
				mu.Unlock()
				if err != nil {
					if err != io.EOF {
						t.Errorf("read: %v", err)
					}
					return
				}
			}
		}()
	}
	rg.Wait()
	if got := bytes.Count(all, []byte("\n")); got != writers*lines || len(all) == 0 {
		t.Fatalf("%d lines came back of %d", got, writers*lines)
	}
	for i := 0; i < 2; i++ {
		if st := <-statuses; !st.Success() {
			t.Fatalf("status %s", st)
		}
	}
}
