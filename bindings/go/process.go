package spore

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"spore.dev/spore/internal/capi"
)

// Process streams (docs/c-api.md, "Process streams"): a process started in
// a context whose stdin, stdout and stderr are flow-controlled streams, so
// neither side ever holds more than a window of what the other does not
// read.

// ProcessOption configures Context.Start.
type ProcessOption func(*processConfig)

type processConfig struct {
	shell    string
	env      map[string]any // a nil value unsets the variable
	envClear bool
	dir      string
	pty      bool
	rows     int
	cols     int
	window   int
}

// WithShell runs command with /bin/sh -c instead of an argv (Start's argv
// must then be nil).
func WithShell(command string) ProcessOption {
	return func(c *processConfig) { c.shell = command }
}

// WithEnv sets environment variables of the process, on top of the
// context's environment (or of none, with WithCleanEnv). May be given more
// than once.
func WithEnv(env map[string]string) ProcessOption {
	return func(c *processConfig) {
		if c.env == nil {
			c.env = map[string]any{}
		}
		for k, v := range env {
			c.env[k] = v
		}
	}
}

// WithoutEnv unsets environment variables of the process.
func WithoutEnv(names ...string) ProcessOption {
	return func(c *processConfig) {
		if c.env == nil {
			c.env = map[string]any{}
		}
		for _, k := range names {
			c.env[k] = nil
		}
	}
}

// WithCleanEnv starts the process with an empty environment (plus what
// WithEnv sets).
func WithCleanEnv() ProcessOption {
	return func(c *processConfig) { c.envClear = true }
}

// WithDir runs the process in dir, a directory of the context.
func WithDir(dir string) ProcessOption {
	return func(c *processConfig) { c.dir = dir }
}

// WithPty runs the process on a new pty of rows x cols (0 for the default
// 24 x 80), its controlling terminal. Stdout then carries all its output
// and stderr is empty.
func WithPty(rows, cols int) ProcessOption {
	return func(c *processConfig) {
		c.pty = true
		c.rows = rows
		c.cols = cols
	}
}

// WithWindow sets the bytes in flight each way (64 KiB to 64 MiB, default
// 4 MiB).
func WithWindow(bytes int) ProcessOption {
	return func(c *processConfig) { c.window = bytes }
}

// Start starts a process in the context with argv (or WithShell) and
// returns once it runs. If ctx is cancelled first, Start returns at once
// and a process that starts afterwards is killed; ctx's deadline bounds the
// start in the context as well (ErrTimedOut, which also matches
// context.DeadlineExceeded), and without one the start may take up to the
// C library's 60 s. Errors: ErrRemote when it could not be started
// (RemoteType FileNotFoundError, PermissionError, ...), ErrBadArgs,
// ErrInvalid, ErrDisconnected, ErrShutdown, ErrTimedOut.
func (c *Context) Start(ctx context.Context, argv []string, opts ...ProcessOption) (*Process, error) {
	if ctx.Err() != nil {
		return nil, waitError(ctx, "start in "+c.name, c.name, "proc.start")
	}
	var cfg processConfig
	for _, o := range opts {
		o(&cfg)
	}
	args := map[string]any{"pty": cfg.pty, "env_clear": cfg.envClear}
	switch {
	case len(argv) > 0 && cfg.shell != "":
		return nil, &Error{Code: ErrInvalid, Message: "Start: argv and WithShell both given", Context: c.name}
	case len(argv) > 0:
		args["argv"] = argv
	case cfg.shell != "":
		args["shell"] = cfg.shell
	default:
		return nil, &Error{Code: ErrInvalid, Message: "Start: argv or WithShell is required", Context: c.name}
	}
	if cfg.env != nil {
		args["env"] = cfg.env
	}
	if cfg.dir != "" {
		args["cwd"] = cfg.dir
	}
	if cfg.rows > 0 {
		args["rows"] = cfg.rows
	}
	if cfg.cols > 0 {
		args["cols"] = cfg.cols
	}
	text, err := json.Marshal(args)
	if err != nil {
		return nil, &Error{Code: ErrInvalid, Message: "Start: " + err.Error(), Context: c.name}
	}
	copts := Options{}
	if cfg.window != 0 {
		copts["window"] = cfg.window
	}
	// ctx's deadline bounds the start in the context too: one that times
	// out there is cancelled (nothing runs, or it is killed as it starts).
	o, err := newCOptions(withDeadline(ctx, copts, "timeout_ms"))
	if err != nil {
		return nil, err
	}
	run := func() (*Process, error) {
		defer o.free()
		var p *Process
		err := c.handle(func(h capi.SwigcptrStruct_SS_spore_context) error {
			var out [1]uintptr
			if err := check(func() int { return capi.Spore_proc_start(out[:], h, string(text), o.h) }); err != nil {
				return withDeadlineCause(ctx, err)
			}
			p = newProcess(c, capi.SwigcptrStruct_SS_spore_process(out[0]))
			return nil
		})
		return p, err
	}
	// Cancelled while the start is under way: Start returns at once, and
	// the process, once it has started, is killed and freed.
	return untilDone(ctx, run, func(p *Process) { p.Close() }, "start in "+c.name, c.name, "proc.start")
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code   int            // its exit status; -1 when a signal killed it
	Signal syscall.Signal // the signal that killed it; 0 if none
}

// Exited reports whether the process exited by itself (no signal killed it).
func (s ExitStatus) Exited() bool { return s.Signal == 0 }

// Success reports whether the process exited with status 0.
func (s ExitStatus) Success() bool { return s.Signal == 0 && s.Code == 0 }

// String is "exit status N" or "signal: NAME", as os.ProcessState says it.
func (s ExitStatus) String() string {
	if s.Signal != 0 {
		return "signal: " + s.Signal.String()
	}
	return "exit status " + strconv.Itoa(s.Code)
}

// Process is a process started by Context.Start. Its methods and streams
// are safe from several goroutines at once (reads of one stream are served
// one at a time). Close it when done: Close, or the garbage collector,
// kills a process that still runs.
type Process struct {
	ctx *Context // keeps the router reachable while the process is used
	pid int
	// Every use of h holds mu for reading; Close takes it for writing, so
	// the handle is freed only once nothing is in C with it.
	mu sync.RWMutex
	h  capi.SwigcptrStruct_SS_spore_process // 0 once closed

	waitSem chan struct{} // one goroutine in spore_process_wait at a time
	status  *ExitStatus   // guarded by waitSem; set once known

	stdin  processInput
	stdout ProcessOutput
	stderr ProcessOutput
}

func newProcess(c *Context, h capi.SwigcptrStruct_SS_spore_process) *Process {
	p := &Process{ctx: c, pid: int(capi.Spore_process_pid(h)), h: h, waitSem: make(chan struct{}, 1)}
	p.stdin.p = p
	p.stdout = ProcessOutput{p: p, fd: 1}
	p.stderr = ProcessOutput{p: p, fd: 2}
	runtime.SetFinalizer(p, (*Process).Close)
	return p
}

// Pid is the process's pid in its context.
func (p *Process) Pid() int { return p.pid }

// Context is the context the process runs in.
func (p *Process) Context() *Context { return p.ctx }

func (p *Process) String() string {
	return "spore.Process(" + strconv.Itoa(p.pid) + " in " + p.ctx.name + ")"
}

// Stdin is the process's standard input. A Write waits while the process
// does not read (as long as it runs: Close from another goroutine ends the
// wait); a Write to a process known to have exited fails with
// ErrDisconnected. Close ends the input (^D on a pty); a later Write fails
// with ErrInvalid.
func (p *Process) Stdin() io.WriteCloser { return &p.stdin }

// Stdout is the process's standard output (all of its output with a pty).
// Read returns io.EOF at its end.
func (p *Process) Stdout() *ProcessOutput { return &p.stdout }

// Stderr is the process's standard error (empty with a pty).
func (p *Process) Stderr() *ProcessOutput { return &p.stderr }

func (p *Process) handle(f func(h capi.SwigcptrStruct_SS_spore_process) error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.h == 0 {
		return p.closedError()
	}
	return f(p.h)
}

func (p *Process) closedError() error {
	return &Error{Code: ErrInvalid, Message: "the handle of process " + strconv.Itoa(p.pid) + " in " + p.ctx.name +
		" is closed", Context: p.ctx.name}
}

// Signal sends sig (a syscall.Signal) to the process's process group. It
// fails with ErrInvalid once the process has ended.
func (p *Process) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return &Error{Code: ErrInvalid, Message: "Signal: " + sig.String() + " is not a syscall.Signal", Context: p.ctx.name}
	}
	return p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
		return check(func() int { return capi.Spore_process_signal(h, int(s)) })
	})
}

// Resize sets the size of the process's pty (started WithPty). It fails
// with ErrInvalid without a pty, for a bad size, or once the process ended.
func (p *Process) Resize(rows, cols int) error {
	return p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
		return check(func() int { return capi.Spore_process_resize(h, rows, cols) })
	})
}

// waitOnce asks for the exit status, waiting up to ms. It returns the C
// status and, when that is neither 0 nor ETIMEDOUT, its error. The caller
// holds waitSem.
func (p *Process) waitOnce(ms int) (int, error) {
	rc := 0
	err := p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
		runtime.LockOSThread() // spore_last_error is per thread
		defer runtime.UnlockOSThread()
		code, sig := []int64{0}, []int64{0}
		rc = capi.Spore_go_process_wait(h, code, sig, ms)
		switch {
		case rc == 0:
			p.status = &ExitStatus{Code: int(code[0]), Signal: syscall.Signal(sig[0])}
		case rc != int(ErrTimedOut):
			return errorFrom(rc, capi.Spore_last_error())
		}
		return nil
	})
	return rc, err
}

// Wait waits until the process has exited and its output has been sent
// (output not read yet stays readable), or until ctx ends. A nonzero exit
// is not an error: see ExitStatus.
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	what := "wait for process " + strconv.Itoa(p.pid) + " in " + p.ctx.name
	if ctx.Err() != nil {
		return ExitStatus{}, waitError(ctx, what, p.ctx.name, "")
	}
	select {
	case p.waitSem <- struct{}{}:
	case <-ctx.Done():
		return ExitStatus{}, waitError(ctx, what, p.ctx.name, "")
	}
	defer func() { <-p.waitSem }()
	deadline, hasDeadline := ctx.Deadline()
	for p.status == nil {
		d := waitSlice
		if hasDeadline {
			if left := time.Until(deadline); left < d {
				d = left
			}
		}
		if d < 0 {
			d = 0
		}
		rc, err := p.waitOnce(int(d / time.Millisecond))
		if err != nil {
			return ExitStatus{}, err
		}
		if rc == int(ErrTimedOut) && ctx.Err() != nil {
			return ExitStatus{}, waitError(ctx, what, p.ctx.name, "")
		}
	}
	return *p.status, nil
}

// Close frees the handle, killing the process (and its group) if it still
// runs. Goroutines inside a Read, Write or Wait return with an error (or
// the end of the output). Safe to call more than once. Returns nil.
func (p *Process) Close() error {
	if !p.mu.TryLock() {
		// Something is in C with the handle, perhaps a Write waiting for
		// a process that does not read, which lasts as long as the process
		// runs: ending the process ends it.
		_ = p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
			capi.Spore_process_signal(h, int(syscall.SIGKILL))
			return nil
		})
		p.mu.Lock()
	}
	h := p.h
	p.h = 0
	p.mu.Unlock()
	if h != 0 {
		runtime.SetFinalizer(p, nil)
		capi.Spore_process_free(h)
	}
	return nil
}

// processInput is a process's stdin.
type processInput struct {
	p *Process
}

func (in *processInput) Write(b []byte) (int, error) {
	p := in.p
	// A process that has exited fails the write (ErrDisconnected), as a
	// closed pipe would: the C library knows once its exit is reported.
	if len(b) == 0 {
		return 0, p.handle(func(capi.SwigcptrStruct_SS_spore_process) error { return nil })
	}
	err := p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
		return check(func() int { return capi.Spore_process_write(h, b, -1) })
	})
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

func (in *processInput) Close() error {
	return in.p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
		return check(func() int { return capi.Spore_process_close_stdin(h) })
	})
}

// ProcessOutput is a process's stdout or stderr: an io.Reader whose reads
// can have a deadline, as an os.File's can.
type ProcessOutput struct {
	p        *Process
	fd       int
	mu       sync.Mutex // one reader of the fd at a time, as the C API requires
	eof      bool
	deadline atomic.Int64 // UnixNano; 0: none
}

// SetReadDeadline makes Read (the one waiting now, and later ones) give up
// at t with an error matching os.ErrDeadlineExceeded; a t in the past makes
// a Read with nothing to read return at once. The zero Time removes the
// deadline. Nothing is lost: what comes later is there for the next Read.
func (o *ProcessOutput) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		o.deadline.Store(0)
	} else {
		o.deadline.Store(t.UnixNano())
	}
	return nil
}

// Read reads what has come (at least a byte), waiting for it; io.EOF at
// the end.
func (o *ProcessOutput) Read(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		// In slices, so that Close and a new deadline are not kept waiting.
		slice := waitSlice
		if dl := o.deadline.Load(); dl != 0 {
			left := time.Until(time.Unix(0, dl))
			if left < slice {
				slice = max(left, 0)
			}
		}
		n := 0
		err := o.p.handle(func(h capi.SwigcptrStruct_SS_spore_process) error {
			if o.eof || len(b) == 0 {
				return nil
			}
			runtime.LockOSThread() // spore_last_error is per thread
			defer runtime.UnlockOSThread()
			n = capi.Spore_process_read(h, o.fd, b, int(slice/time.Millisecond))
			switch {
			case n == 0:
				o.eof = true
			case n < 0 && n != int(ErrTimedOut):
				return errorFrom(n, capi.Spore_last_error())
			}
			return nil
		})
		switch {
		case err != nil:
			return 0, err
		case o.eof:
			return 0, io.EOF
		case n >= 0:
			return n, nil // 0 only for an empty b
		}
		if dl := o.deadline.Load(); dl != 0 && !time.Now().Before(time.Unix(0, dl)) {
			return 0, os.ErrDeadlineExceeded
		}
	}
}
