package spore

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"spore.dev/spore/internal/capi"
)

// Result is what a call returned: its JSON value and, for functions such
// as fs.read or sys.echo with data, a binary part.
type Result struct {
	JSON []byte // the value as JSON text
	Data []byte // the binary part; nil when there is none
}

// Decode unmarshals the JSON value into v (see encoding/json).
func (r Result) Decode(v any) error {
	if err := json.Unmarshal(r.JSON, v); err != nil {
		return &Error{Code: ErrProto, Message: "result does not decode: " + err.Error()}
	}
	return nil
}

// Value decodes the JSON value into Go's generic types: map[string]any,
// []any, string, bool, nil, and json.Number for numbers (Int64 and Float64
// read them without losing integers).
func (r Result) Value() (any, error) {
	d := json.NewDecoder(bytes.NewReader(r.JSON))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, &Error{Code: ErrProto, Message: "result does not decode: " + err.Error()}
	}
	return v, nil
}

// Pending is a call in flight, from CallAsync. Wait gives its result; Close
// abandons it. Several goroutines may Wait; they are served one at a time,
// and all get the same outcome.
type Pending struct {
	ctx      *Context
	function string
	sem      chan struct{} // one waiter in C at a time (the C API's rule)
	h        capi.SwigcptrStruct_SS_spore_pending
	closing  atomic.Bool
	done     atomic.Bool // set once finished, for Done without the semaphore
	finished bool
	res      Result
	err      error
}

// waitSlice bounds each wait inside C, so Close and context cancellation
// are noticed while a reply is outstanding. A reply ends a wait at once,
// so this costs no latency.
const waitSlice = 50 * time.Millisecond

func newPending(c *Context, h capi.SwigcptrStruct_SS_spore_pending, function string) *Pending {
	p := &Pending{ctx: c, function: function, sem: make(chan struct{}, 1), h: h}
	runtime.SetFinalizer(p, (*Pending).Close)
	return p
}

// Done reports whether the call has finished, successfully or not. It
// never blocks.
func (p *Pending) Done() bool {
	if p.done.Load() {
		return true
	}
	select {
	case p.sem <- struct{}{}:
	default:
		return false // a Wait is in progress; it sets done as it returns
	}
	defer func() { <-p.sem }()
	return p.finished || (p.h != 0 && capi.Spore_call_done(p.h) == 1)
}

// Wait waits for the call's result until ctx ends. When ctx ends first the
// call stays pending: Wait may be called again.
func (p *Pending) Wait(ctx context.Context) (Result, error) {
	if ctx.Err() != nil {
		return Result{}, waitError(ctx, p.function+" in "+p.ctx.name, p.ctx.name, p.function)
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return Result{}, waitError(ctx, p.function+" in "+p.ctx.name, p.ctx.name, p.function)
	}
	defer func() { <-p.sem }()
	if p.finished {
		return p.res, p.err
	}
	if p.h == 0 {
		return Result{}, p.closedError()
	}
	var out [1]uintptr
	deadline, hasDeadline := ctx.Deadline()
	for {
		d := waitSlice
		if hasDeadline {
			if left := time.Until(deadline); left < d {
				d = left
			}
		}
		if d < 0 {
			d = 0
		}
		slice := int(d / time.Millisecond)
		rc := capi.Spore_call_wait(p.h, out[:], slice)
		if rc == 0 {
			res := capi.SwigcptrStruct_SS_spore_result(out[0])
			p.res = takeResult(res)
			p.finish(nil)
			return p.res, nil
		}
		// ETIMEDOUT is either this wait's slice running out (the call has
		// no error recorded yet) or the call's own failure.
		if rc == int(ErrTimedOut) && capi.Spore_call_error(p.h).GetCode() == 0 {
			if ctx.Err() != nil {
				return Result{}, waitError(ctx, p.function+" in "+p.ctx.name, p.ctx.name, p.function)
			}
			if p.closing.Load() {
				return Result{}, p.closedError()
			}
			continue
		}
		p.finish(errorFrom(rc, capi.Spore_call_error(p.h)))
		return Result{}, p.err
	}
}

func takeResult(res capi.SwigcptrStruct_SS_spore_result) Result {
	r := Result{JSON: []byte(capi.Spore_result_json(res))}
	if n := capi.Spore_go_result_len(res); n > 0 {
		r.Data = make([]byte, n)
		capi.Spore_go_result_copy(res, r.Data)
	}
	capi.Spore_result_free(res)
	return r
}

// finish records the outcome and frees the C call: nothing more is needed
// from it.
func (p *Pending) finish(err error) {
	p.finished = true
	p.done.Store(true)
	p.err = err
	capi.Spore_call_free(p.h)
	p.h = 0
	runtime.SetFinalizer(p, nil)
}

// Close abandons the call if it is still pending (its reply is discarded)
// and frees it. Goroutines in Wait return within 50 ms with ErrInvalid.
// Returns nil.
func (p *Pending) Close() error {
	p.closing.Store(true)
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	if p.h != 0 {
		capi.Spore_call_free(p.h)
		p.h = 0
		runtime.SetFinalizer(p, nil)
	}
	if !p.finished {
		p.finished = true
		p.done.Store(true)
		p.err = p.closedError()
	}
	return nil
}

func (p *Pending) closedError() error {
	return &Error{Code: ErrInvalid, Message: "the call " + p.function + " in " + p.ctx.name + " was closed",
		Context: p.ctx.name, Function: p.function}
}

// Chain is a call chain (Context.Chain): pipelined calls that stop at the
// first failure. Safe from several goroutines, but the order of steps is
// then the order in which they reach the chain.
type Chain struct {
	ctx *Context
	mu  sync.RWMutex
	h   capi.SwigcptrStruct_SS_spore_chain
}

func (ch *Chain) handle(f func(h capi.SwigcptrStruct_SS_spore_chain) error) error {
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	if ch.h == 0 {
		return &Error{Code: ErrInvalid, Message: "the chain on " + ch.ctx.name + " is closed", Context: ch.ctx.name}
	}
	return f(ch.h)
}

// Step appends a call without waiting for it (it costs no round trip).
func (ch *Chain) Step(function string, args any, opts ...CallOption) error {
	text, data, err := callParts(function, args, opts)
	if err != nil {
		return err
	}
	return ch.handle(func(h capi.SwigcptrStruct_SS_spore_chain) error {
		return check(func() int { return capi.Spore_chain_call_no_reply(h, function, text, data) })
	})
}

// Call appends a call and waits for its result; it fails with the error of
// the first failed earlier step if there was one. ctx's deadline bounds
// the wait (a chain step cannot be abandoned half way, so cancellation
// without a deadline is noticed only when the step returns).
func (ch *Chain) Call(ctx context.Context, function string, args any, opts ...CallOption) (Result, error) {
	text, data, err := callParts(function, args, opts)
	if err != nil {
		return Result{}, err
	}
	timeout := -1
	if dl, ok := ctx.Deadline(); ok {
		timeout = int(time.Until(dl) / time.Millisecond)
		if timeout < 0 {
			timeout = 0
		}
	}
	var r Result
	err = ch.handle(func(h capi.SwigcptrStruct_SS_spore_chain) error {
		var out [1]uintptr
		err := check(func() int { return capi.Spore_chain_call(out[:], h, function, text, data, timeout) })
		if err != nil {
			return withDeadlineCause(ctx, err)
		}
		r = takeResult(capi.SwigcptrStruct_SS_spore_result(out[0]))
		return nil
	})
	return r, err
}

// Close frees the chain and tells the context to forget it. Returns nil.
func (ch *Chain) Close() error {
	ch.mu.Lock()
	h := ch.h
	ch.h = 0
	ch.mu.Unlock()
	if h != 0 {
		runtime.SetFinalizer(ch, nil)
		capi.Spore_chain_free(h)
	}
	return nil
}

// Version is the version of the loaded C library, e.g. "0.1.0".
func Version() string { return capi.Spore_version_string() }
