package spore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"spore.dev/spore/internal/capi"
)

// Options are a connection method's options (docs/methods.md), keyed by
// their C names: "name", "connect_timeout", "hostname", "username",
// "password", "command_prefix", ... Values are strings, bools, integers,
// []string for list options, or time.Duration for the *_timeout options
// (sent as milliseconds).
type Options map[string]any

// Args are the arguments of a call, marshalled to a JSON object. Any value
// that encoding/json turns into an object may be used instead.
type Args = map[string]any

// withDeadline copies opts, setting key (a timeout option) to what is
// left of ctx's deadline when that is sooner than the value given.
func withDeadline(ctx context.Context, opts Options, key string) Options {
	merged := Options{}
	for k, v := range opts {
		merged[k] = v
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left < time.Millisecond {
			left = time.Millisecond
		}
		if cur, ok := merged[key]; !ok || durationOf(cur) > left {
			merged[key] = left
		}
	}
	return merged
}

// cOptions is a spore_options handle made from Options; free must be called.
type cOptions struct {
	h capi.SwigcptrStruct_SS_spore_options
}

func (o cOptions) free() {
	if o.h != 0 {
		capi.Spore_options_free(o.h)
	}
}

func noNUL(key, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return &Error{Code: ErrInvalid, Message: fmt.Sprintf("option %q: a string must not contain NUL", key)}
	}
	return nil
}

func newCOptions(opts Options) (cOptions, error) {
	var out [1]uintptr
	if err := check(func() int { return capi.Spore_options_new(out[:]) }); err != nil {
		return cOptions{}, err
	}
	o := cOptions{h: capi.SwigcptrStruct_SS_spore_options(out[0])}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad key named is always the same one
	for _, k := range keys {
		if err := o.set(k, opts[k]); err != nil {
			o.free()
			return cOptions{}, err
		}
	}
	return o, nil
}

func (o cOptions) set(key string, v any) error {
	if err := noNUL(key, key); err != nil {
		return err
	}
	var n int64
	switch x := v.(type) {
	case string:
		if err := noNUL(key, x); err != nil {
			return err
		}
		return check(func() int { return capi.Spore_options_set_str(o.h, key, x) })
	case bool:
		b := 0
		if x {
			b = 1
		}
		return check(func() int { return capi.Spore_options_set_bool(o.h, key, b) })
	case []string:
		if len(x) == 0 {
			return &Error{Code: ErrInvalid, Message: fmt.Sprintf("option %q: an empty list", key)}
		}
		for _, s := range x {
			if err := noNUL(key, s); err != nil {
				return err
			}
			if err := check(func() int { return capi.Spore_options_add_str(o.h, key, s) }); err != nil {
				return err
			}
		}
		return nil
	case time.Duration:
		n = x.Milliseconds()
	case int:
		n = int64(x)
	case int8:
		n = int64(x)
	case int16:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case uint8:
		n = int64(x)
	case uint16:
		n = int64(x)
	case uint32:
		n = int64(x)
	case uint:
		if uint64(x) > 1<<63-1 {
			return &Error{Code: ErrInvalid, Message: fmt.Sprintf("option %q: %d is too large", key, x)}
		}
		n = int64(x)
	case uint64:
		if x > 1<<63-1 {
			return &Error{Code: ErrInvalid, Message: fmt.Sprintf("option %q: %d is too large", key, x)}
		}
		n = int64(x)
	default:
		return &Error{Code: ErrInvalid, Message: fmt.Sprintf("option %q: values of type %T are not options "+
			"(use a string, bool, integer, []string or time.Duration)", key, v)}
	}
	return check(func() int { return capi.Spore_options_set_int(o.h, key, n) })
}
