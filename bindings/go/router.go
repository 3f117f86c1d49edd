package spore

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"spore.dev/spore/internal/capi"
)

// Router owns the I/O thread of the C library and every context opened
// from it. Make one with NewRouter and Close it when done; all its methods
// are safe from several goroutines at once.
type Router struct {
	// mu is held for reading by every C call that takes the router handle
	// and for writing by Close while it frees the handle.
	mu        sync.RWMutex
	h         capi.SwigcptrStruct_SS_spore_router // 0 once freed
	closeOnce sync.Once
	logsDone  chan struct{} // closed when the log goroutine has left; nil without one
	attached  bool          // made by Attach: its contexts are the listener's
}

type routerConfig struct {
	opts    Options
	handler slog.Handler
	level   *slog.Level
	forward bool
}

// RouterOption configures NewRouter.
type RouterOption func(*routerConfig)

// WithAgentPath names the spore-agent binary shipped to new contexts
// (default: $SPORE_AGENT_PATH, then the installed one).
func WithAgentPath(path string) RouterOption {
	return func(c *routerConfig) { c.opts["agent_path"] = path }
}

// WithMaxMessageSize sets the largest message, in bytes, any context
// accepts (default 128 MiB).
func WithMaxMessageSize(n int64) RouterOption {
	return func(c *routerConfig) { c.opts["max_message_size"] = n }
}

// WithLogQueueSize sets how many records wait for the log goroutine before
// older ones are dropped (default 10000).
func WithLogQueueSize(n int) RouterOption {
	return func(c *routerConfig) { c.opts["log_queue_size"] = n }
}

// WithLogQueueBytes bounds the bytes the waiting records may take (default
// 4 MiB); older records are dropped and counted once it is reached.
func WithLogQueueBytes(n int64) RouterOption {
	return func(c *routerConfig) { c.opts["log_queue_bytes"] = n }
}

// WithLogger sends the agents' records to l's handler instead of
// slog.Default's.
func WithLogger(l *slog.Logger) RouterOption {
	return func(c *routerConfig) { c.handler = l.Handler() }
}

// WithLogLevel sets the lowest level the agents forward. Records below it
// are never sent. By default it is the lowest level the handler enables.
func WithLogLevel(level slog.Level) RouterOption {
	return func(c *routerConfig) { c.level = &level }
}

// WithoutLogs keeps the agents' records out of slog; no log goroutine runs.
func WithoutLogs() RouterOption {
	return func(c *routerConfig) { c.forward = false }
}

// NewRouter starts a router.
func NewRouter(options ...RouterOption) (*Router, error) {
	return makeRouter(nil, options, func(out []uintptr, o capi.SwigcptrStruct_SS_spore_options) int {
		return capi.Spore_router_new(out, o)
	})
}

// Attach makes a router attached to the router listening on the Unix
// socket at path (see Listen): its contexts are the listener's. Connect asks
// the listener and by default returns its live context opened with the
// same method, options and via ("reuse": false in the options for a new
// one); Find looks the listener's contexts up by name. Closing it leaves the
// contexts up in the listener; what its calls started stops. ctx's deadline
// bounds the wait for the listener's answer (default 10 s). WithAgentPath
// and WithMaxMessageSize are the listener's and give ErrInvalid. A missing
// listener is ErrConnect, another user's ErrPermission.
func Attach(ctx context.Context, path string, options ...RouterOption) (*Router, error) {
	if err := ctx.Err(); err != nil {
		return nil, waitError(ctx, "attach to "+path, "", "")
	}
	extra := Options{}
	if d, ok := ctx.Deadline(); ok {
		ms := time.Until(d).Milliseconds()
		if ms < 1 {
			ms = 1
		}
		extra["connect_timeout"] = ms
	}
	r, err := makeRouter(extra, options, func(out []uintptr, o capi.SwigcptrStruct_SS_spore_options) int {
		return capi.Spore_router_attach(out, path, o)
	})
	if r != nil {
		r.attached = true
	}
	return r, err
}

// Listen makes the router accept attached routers (Attach) on a Unix socket
// at path, so that other processes of this user use its contexts with its
// authority. The socket gets mode 0600; its directory must belong to this
// user with mode 0700 (it is created so when missing). The socket file is
// removed when the router is closed.
func (r *Router) Listen(path string) error {
	return r.handle(func(h capi.SwigcptrStruct_SS_spore_router) error {
		return check(func() int { return capi.Spore_router_listen(h, path) })
	})
}

// Find returns the live context named name: one this router opened or, for
// an attached router, one its listener has. ErrNotFound when there is none.
// ctx is checked before the lookup, which asks the listener when attached.
func (r *Router) Find(ctx context.Context, name string) (*Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, waitError(ctx, "find "+name, "", "")
	}
	var c *Context
	err := r.handle(func(h capi.SwigcptrStruct_SS_spore_router) error {
		var out [1]uintptr
		if err := check(func() int { return capi.Spore_context_find(out[:], h, name) }); err != nil {
			return err
		}
		c = newContext(r, capi.SwigcptrStruct_SS_spore_context(out[0]))
		return nil
	})
	return c, err
}

func makeRouter(extra Options, options []RouterOption,
	create func(out []uintptr, o capi.SwigcptrStruct_SS_spore_options) int) (*Router, error) {
	cfg := routerConfig{opts: Options{}, forward: true}
	for k, v := range extra {
		cfg.opts[k] = v
	}
	for _, o := range options {
		o(&cfg)
	}
	if cfg.handler == nil {
		cfg.handler = slog.Default().Handler()
	}
	level := lowestEnabled(cfg.handler)
	if cfg.level != nil {
		level = toSporeLevel(*cfg.level)
	}
	cfg.opts["log_level"] = level
	copts, err := newCOptions(cfg.opts)
	if err != nil {
		return nil, err
	}
	defer copts.free()
	var out [1]uintptr
	if err := check(func() int { return create(out[:], copts.h) }); err != nil {
		return nil, err
	}
	r := &Router{h: capi.SwigcptrStruct_SS_spore_router(out[0])}
	if cfg.forward {
		r.logsDone = make(chan struct{})
		// The goroutine holds the handle, not r, so an unreachable Router
		// is still collected (and its finalizer closes it).
		go pumpLogs(r.h, cfg.handler, r.logsDone)
	}
	runtime.SetFinalizer(r, (*Router).Close)
	return r, nil
}

// Close shuts every context down (agents exit, their children first),
// fails every waiting call with ErrShutdown, and frees the router. Contexts,
// calls and results still held stay safe to use (they fail) and to close.
// Safe to call more than once and from several goroutines; it returns once
// the shutdown is complete. It always returns nil.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		runtime.SetFinalizer(r, nil)
		r.mu.RLock()
		h := r.h
		r.mu.RUnlock()
		if h == 0 {
			return
		}
		// Wakes connects in progress and the log goroutine, which drains
		// the records still queued, then leaves.
		capi.Spore_router_close(h)
		if r.logsDone != nil {
			<-r.logsDone
		}
		r.mu.Lock()
		r.h = 0
		r.mu.Unlock()
		capi.Spore_router_free(h)
	})
	return nil
}

// handle runs f with the router's handle, or fails with ErrShutdown once
// the router is closed.
func (r *Router) handle(f func(h capi.SwigcptrStruct_SS_spore_router) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.h == 0 {
		return &Error{Code: ErrShutdown, Message: "the router is closed"}
	}
	return f(r.h)
}

// SetLogLevel changes the lowest level the agents forward, in every
// context; records below it are not sent.
func (r *Router) SetLogLevel(level slog.Level) error {
	return r.handle(func(h capi.SwigcptrStruct_SS_spore_router) error {
		return check(func() int { return capi.Spore_router_set_log_level(h, toSporeLevel(level)) })
	})
}

// DroppedLogs counts the records dropped because the log queue was full.
func (r *Router) DroppedLogs() uint64 {
	var n uint64
	_ = r.handle(func(h capi.SwigcptrStruct_SS_spore_router) error {
		n = capi.Spore_router_dropped_logs(h)
		return nil
	})
	return n
}

// Connect opens a context with a connection method ("local", "fork",
// "ssh", "sudo", "su", "doas", "docker", ...; docs/methods.md), through via
// if it is not nil, and waits until its agent answers. ctx bounds the wait:
// its deadline becomes connect_timeout when that is sooner, and cancelling
// it returns at once (the connect finishes in the background and its
// context is shut down).
func (r *Router) Connect(ctx context.Context, method string, via *Context, opts Options) (*Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, waitError(ctx, "connect "+method, "", "")
	}
	merged := withDeadline(ctx, opts, "connect_timeout")
	copts, err := newCOptions(merged)
	if err != nil {
		return nil, err
	}
	run := func() (*Context, error) {
		defer copts.free()
		var c *Context
		err := r.handle(func(h capi.SwigcptrStruct_SS_spore_router) error {
			var vh capi.SwigcptrStruct_SS_spore_context
			if via != nil {
				via.mu.RLock()
				defer via.mu.RUnlock()
				if via.h == 0 {
					return &Error{Code: ErrInvalid, Message: "the via context " + via.name + " is closed", Context: via.name}
				}
				vh = via.h
			}
			var out [1]uintptr
			if err := check(func() int { return capi.Spore_connect(out[:], h, method, copts.h, vh) }); err != nil {
				return err
			}
			c = newContext(r, capi.SwigcptrStruct_SS_spore_context(out[0]))
			return nil
		})
		return c, withDeadlineCause(ctx, err)
	}
	drop := func(c *Context) {
		// An attached router's context is the listener's, perhaps shared:
		// only the handle goes.
		if !r.attached {
			_ = c.Shutdown(context.Background())
		}
		c.Close()
	}
	return untilDone(ctx, run, drop, "connect "+method, "", "")
}

func durationOf(v any) time.Duration {
	switch x := v.(type) {
	case time.Duration:
		return x
	case int:
		return time.Duration(x) * time.Millisecond
	case int64:
		return time.Duration(x) * time.Millisecond
	case int32:
		return time.Duration(x) * time.Millisecond
	}
	return 0
}

// Local starts an agent process on this machine.
func (r *Router) Local(ctx context.Context, opts Options) (*Context, error) {
	return r.Connect(ctx, "local", nil, opts)
}

// Fork has via's agent fork itself into a new context.
func (r *Router) Fork(ctx context.Context, via *Context, opts Options) (*Context, error) {
	return r.Connect(ctx, "fork", via, opts)
}

// SSH connects to hostname (options: username, port, password,
// identity_file, check_host_keys, ...), through via if not nil.
func (r *Router) SSH(ctx context.Context, hostname string, via *Context, opts Options) (*Context, error) {
	return r.Connect(ctx, "ssh", via, with(opts, "hostname", hostname))
}

// Sudo becomes username (root when empty) with sudo, through via if not nil.
func (r *Router) Sudo(ctx context.Context, username string, via *Context, opts Options) (*Context, error) {
	return r.Connect(ctx, "sudo", via, with(opts, "username", username))
}

// Su becomes username (root when empty) with su, through via if not nil.
func (r *Router) Su(ctx context.Context, username string, via *Context, opts Options) (*Context, error) {
	return r.Connect(ctx, "su", via, with(opts, "username", username))
}

// Doas becomes username (root when empty) with doas, through via if not nil.
func (r *Router) Doas(ctx context.Context, username string, via *Context, opts Options) (*Context, error) {
	return r.Connect(ctx, "doas", via, with(opts, "username", username))
}

func with(opts Options, key, value string) Options {
	out := Options{}
	for k, v := range opts {
		out[k] = v
	}
	if value != "" {
		out[key] = value
	}
	return out
}
