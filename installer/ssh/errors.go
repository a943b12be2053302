package ssh

import (
	"fmt"
	"strings"
)

// stderrTailBytes bounds how much of a failed command's stderr an error keeps.
const stderrTailBytes = 2048

// CommandError is a remote command that failed: it could not start, was
// cancelled, or exited non-zero (ExitCode >= 0 then).
type CommandError struct {
	Host    string
	Command string
	// ExitCode is the remote exit status, or -1 when there is none (the
	// session failed, or the command was killed by a signal or cancelled).
	ExitCode int
	// Stderr is the tail of the command's standard error.
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host %s: command %q", e.Host, e.Command)
	if e.ExitCode >= 0 {
		fmt.Fprintf(&b, " exited with code %d", e.ExitCode)
		if e.Err != nil {
			fmt.Fprintf(&b, " (%v)", e.Err)
		}
	} else if e.Err != nil {
		fmt.Fprintf(&b, " failed: %v", e.Err)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		fmt.Fprintf(&b, "; stderr: %s", s)
	}
	return b.String()
}

func (e *CommandError) Unwrap() error { return e.Err }

// tail returns at most n bytes from the end of s, cut at a line start
// when one is near.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < 200 {
		s = s[i+1:]
	}
	return "…" + s
}

// redact replaces every occurrence of secret in s.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[redacted]")
}

// ShellQuote quotes s as one word for a POSIX shell: as it is when it
// holds only characters no shell treats specially, else in single quotes.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
