package lab

import (
	"io"
	"log/slog"
	"path/filepath"
	"sync"

	"kforge.dev/kforge/installer"
)

// Options are shared by every lab command.
type Options struct {
	// Dir holds the lab's files (DefaultDir when empty).
	Dir string
	// Bridge is the bridge name (DefaultBridge when empty); it must start
	// with "kforge".
	Bridge string
	// Out receives results, ErrOut progress.
	Out, ErrOut io.Writer
	// Reporter receives the steps' progress; when nil, the installer's
	// text reporter writes ✓/✗ lines to ErrOut (with a spinner when TTY).
	Reporter installer.Reporter
	TTY      bool
	Log      *slog.Logger
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ErrOut == nil {
		o.ErrOut = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return validBridgeName(o.Bridge)
}

// reporter returns the reporter for a command's steps and a function that
// stops it (its spinner) before anything else is written to ErrOut; the
// function may be called more than once.
func (o *Options) reporter() (installer.Reporter, func()) {
	if o.Reporter != nil {
		return o.Reporter, func() {}
	}
	tr := installer.NewTextReporter(o.ErrOut, o.TTY)
	var once sync.Once
	return tr, func() { once.Do(tr.Close) }
}
