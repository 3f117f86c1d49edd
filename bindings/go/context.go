package spore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"spore.dev/spore/internal/capi"
)

// Context is one process spore talks to: an agent on this machine, behind
// sudo, on an SSH host, in a container. Its methods are safe from several
// goroutines at once.
type Context struct {
	router *Router // keeps the router reachable while its contexts are
	mu     sync.RWMutex
	h      capi.SwigcptrStruct_SS_spore_context // 0 once closed
	name   string
	id     uint32
}

func newContext(r *Router, h capi.SwigcptrStruct_SS_spore_context) *Context {
	c := &Context{router: r, h: h, name: capi.Spore_context_name(h), id: uint32(capi.Spore_context_id(h))}
	runtime.SetFinalizer(c, (*Context).Close)
	return c
}

// Name is the context's name, e.g. "local.1" or "local.1/fork.2".
func (c *Context) Name() string { return c.name }

// ID is the context's id, unique within its router.
func (c *Context) ID() uint32 { return c.id }

// Router is the router the context belongs to.
func (c *Context) Router() *Router { return c.router }

func (c *Context) String() string { return "spore.Context(" + c.name + ")" }

// Alive reports whether the context is still connected.
func (c *Context) Alive() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.h != 0 && capi.Spore_context_alive(c.h) == 1
}

func (c *Context) handle(f func(h capi.SwigcptrStruct_SS_spore_context) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.h == 0 {
		return &Error{Code: ErrInvalid, Message: "the handle of context " + c.name + " is closed", Context: c.name}
	}
	return f(c.h)
}

// Shutdown asks the context to exit (its own children first) and waits
// until it has disconnected, for at most ctx's deadline (5 s without one;
// cancellation is not noticed during the wait, which is bounded anyway).
// Calls waiting on it fail with ErrDisconnected.
func (c *Context) Shutdown(ctx context.Context) error {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout < 0 {
			timeout = 0
		}
	}
	return c.handle(func(h capi.SwigcptrStruct_SS_spore_context) error {
		return check(func() int { return capi.Spore_context_shutdown(h, int(timeout.Milliseconds())) })
	})
}

// Close drops this handle; the context keeps running until it is shut down
// or its router is closed. Safe to call more than once. Returns nil.
func (c *Context) Close() error {
	c.mu.Lock()
	h := c.h
	c.h = 0
	c.mu.Unlock()
	if h != 0 {
		runtime.SetFinalizer(c, nil)
		capi.Spore_context_free(h)
	}
	return nil
}

// CallOption adds to a call.
type CallOption func(*callConfig)

type callConfig struct {
	data []byte
}

// WithData sends data as the call's binary part (fs.write, sys.echo, ...).
// The slice is read before the call returns from sending.
func WithData(data []byte) CallOption {
	return func(c *callConfig) { c.data = data }
}

// callParts is what every kind of call sends: its JSON arguments and the
// binary part of its options.
func callParts(function string, args any, opts []CallOption) (string, []byte, error) {
	text, err := argsJSON(function, args)
	if err != nil {
		return "", nil, err
	}
	var cfg callConfig
	for _, o := range opts {
		o(&cfg)
	}
	return text, cfg.data, nil
}

func argsJSON(function string, args any) (string, error) {
	if args == nil {
		return "{}", nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return "", &Error{Code: ErrInvalid, Message: fmt.Sprintf("arguments of %s: %v", function, err), Function: function}
	}
	if len(b) == 0 || b[0] != '{' {
		return "", &Error{Code: ErrInvalid, Message: fmt.Sprintf("arguments of %s must be a JSON object, not %s", function, b),
			Function: function}
	}
	return string(b), nil
}

// CallAsync starts function in the context and returns at once; Wait on
// the Pending for its result.
func (c *Context) CallAsync(function string, args any, opts ...CallOption) (*Pending, error) {
	text, data, err := callParts(function, args, opts)
	if err != nil {
		return nil, err
	}
	var p *Pending
	err = c.handle(func(h capi.SwigcptrStruct_SS_spore_context) error {
		var out [1]uintptr
		if err := check(func() int { return capi.Spore_call_async(out[:], h, function, text, data) }); err != nil {
			return err
		}
		p = newPending(c, capi.SwigcptrStruct_SS_spore_pending(out[0]), function)
		return nil
	})
	return p, err
}

// Call runs function in the context with args (a map, a struct, or nil)
// and waits for its result, or until ctx ends: then the call is abandoned
// (its reply is discarded when it comes).
func (c *Context) Call(ctx context.Context, function string, args any, opts ...CallOption) (Result, error) {
	p, err := c.CallAsync(function, args, opts...)
	if err != nil {
		return Result{}, err
	}
	defer p.Close()
	return p.Wait(ctx)
}

// CallNoReply sends a call whose result nobody waits for; the context logs
// its failure.
func (c *Context) CallNoReply(function string, args any, opts ...CallOption) error {
	text, data, err := callParts(function, args, opts)
	if err != nil {
		return err
	}
	return c.handle(func(h capi.SwigcptrStruct_SS_spore_context) error {
		return check(func() int { return capi.Spore_call_no_reply(h, function, text, data) })
	})
}

// CallAs runs a call and decodes its JSON result into a T.
func CallAs[T any](ctx context.Context, c *Context, function string, args any, opts ...CallOption) (T, error) {
	var v T
	res, err := c.Call(ctx, function, args, opts...)
	if err != nil {
		return v, err
	}
	err = res.Decode(&v)
	return v, err
}

// Chain starts a call chain: its calls run in order in the context, and
// after the first failure every later one fails with that error without
// running. Close it when done.
func (c *Context) Chain() (*Chain, error) {
	var ch *Chain
	err := c.handle(func(h capi.SwigcptrStruct_SS_spore_context) error {
		var out [1]uintptr
		if err := check(func() int { return capi.Spore_chain_new(out[:], h) }); err != nil {
			return err
		}
		ch = &Chain{ctx: c, h: capi.SwigcptrStruct_SS_spore_chain(out[0])}
		runtime.SetFinalizer(ch, (*Chain).Close)
		return nil
	})
	return ch, err
}
