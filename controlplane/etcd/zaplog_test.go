package etcd

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	quiet := false
	zl := newZapLogger(log, func() bool { return quiet }).With(zap.String("member", "m1"))

	zl.Debug("hidden")
	zl.Info("hello", zap.Int("n", 3), zap.Error(errors.New("boom")), zap.Strings("urls", []string{"a", "b"}))
	zl.Error("loud")
	quiet = true
	zl.Error("closed listener") // demoted to debug: not shown
	out := buf.String()
	for _, want := range []string{"level=INFO msg=hello member=m1 n=3 error=boom urls=\"[a b]\"", "level=ERROR msg=loud member=m1"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	for _, not := range []string{"hidden", "closed listener"} {
		if strings.Contains(out, not) {
			t.Errorf("%q should not be logged:\n%s", not, out)
		}
	}
}
