package spore

import (
	"context"

	"spore.dev/spore/internal/capi"
)

// File transfers (docs/c-api.md, "Files"): through any number of hops, in
// chunks within a window of unacknowledged bytes, written to a temporary
// file beside the destination and renamed over it only when complete.
// Options: "mode" (int), "preserve_owner", "preserve_mtime", "sync" (bool),
// "window" (int bytes), "max_size" (GetBytes). ctx's deadline bounds the
// whole transfer (the "timeout" option); a cancellation is noticed only
// before the transfer starts, since the C library does not interrupt a
// transfer half way. Errors: ErrNotFound, ErrPermission, ErrNoSpace,
// ErrChanged, ErrInvalid, ErrTooBig (GetBytes), ErrTimedOut,
// ErrDisconnected, ErrShutdown, ErrRemote.

func (c *Context) transfer(ctx context.Context, what string, opts Options,
	f func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int) error {
	if ctx.Err() != nil {
		return waitError(ctx, what+" with "+c.name, c.name, what)
	}
	merged := withDeadline(ctx, opts, "timeout")
	o, err := newCOptions(merged)
	if err != nil {
		return err
	}
	defer o.free()
	err = c.handle(func(h capi.SwigcptrStruct_SS_spore_context) error {
		return check(func() int { return f(h, o) })
	})
	return withDeadlineCause(ctx, err)
}

// PutFile copies the local file localPath to remotePath in the context.
func (c *Context) PutFile(ctx context.Context, localPath, remotePath string, opts Options) error {
	return c.transfer(ctx, "put", opts, func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int {
		return capi.Spore_put_file(h, localPath, remotePath, o.h)
	})
}

// PutBytes writes data as the file remotePath in the context.
func (c *Context) PutBytes(ctx context.Context, data []byte, remotePath string, opts Options) error {
	return c.transfer(ctx, "put", opts, func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int {
		return capi.Spore_put_bytes(h, data, remotePath, o.h)
	})
}

// GetFile copies remotePath of the context to the local file localPath.
func (c *Context) GetFile(ctx context.Context, remotePath, localPath string, opts Options) error {
	return c.transfer(ctx, "get", opts, func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int {
		return capi.Spore_get_file(h, remotePath, localPath, o.h)
	})
}

// PutTree copies the local directory tree localDir into remoteDir of the
// context (created if missing; what it held is kept unless replaced).
func (c *Context) PutTree(ctx context.Context, localDir, remoteDir string, opts Options) error {
	return c.transfer(ctx, "put_tree", opts, func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int {
		return capi.Spore_put_tree(h, localDir, remoteDir, o.h)
	})
}

// GetTree copies the directory tree remoteDir of the context into localDir.
func (c *Context) GetTree(ctx context.Context, remoteDir, localDir string, opts Options) error {
	return c.transfer(ctx, "get_tree", opts, func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int {
		return capi.Spore_get_tree(h, remoteDir, localDir, o.h)
	})
}

// GetBytes returns the content of remotePath in the context (at most
// max_size bytes, default 128 MiB).
func (c *Context) GetBytes(ctx context.Context, remotePath string, opts Options) ([]byte, error) {
	var data []byte
	err := c.transfer(ctx, "get", opts, func(h capi.SwigcptrStruct_SS_spore_context, o cOptions) int {
		var out [1]uintptr
		rc := capi.Spore_get_bytes(out[:], h, remotePath, o.h)
		if rc == 0 {
			r := takeResult(capi.SwigcptrStruct_SS_spore_result(out[0]))
			data = r.Data
			if data == nil {
				data = []byte{}
			}
		}
		return rc
	})
	return data, err
}
