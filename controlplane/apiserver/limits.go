package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits bound the work one client can make the server do. Zero fields
// take the defaults of NewLimits, which are upstream kube-apiserver's where
// it has one.
type Limits struct {
	// MaxRequestsInFlight caps read-only requests (GET, HEAD) being served
	// at once; past it a request is answered 429 with Retry-After, as
	// upstream's --max-requests-inflight (400). Watches are not counted.
	MaxRequestsInFlight int `yaml:"maxRequestsInFlight" json:"maxRequestsInFlight"`
	// MaxMutatingRequestsInFlight caps the other requests, as upstream's
	// --max-mutating-requests-inflight (200).
	MaxMutatingRequestsInFlight int `yaml:"maxMutatingRequestsInFlight" json:"maxMutatingRequestsInFlight"`
	// RequestTimeout is how long a request other than a watch may run
	// before it is answered 504; a shorter ?timeout= is honoured, as
	// upstream's --request-timeout (60s).
	RequestTimeout time.Duration `yaml:"requestTimeout" json:"requestTimeout"`
	// ReadHeaderTimeout and IdleTimeout are the http.Server's, as upstream
	// sets them (32s, just under its 34s handler bound; 90s, the Go client's
	// keep-alive).
	ReadHeaderTimeout time.Duration `yaml:"readHeaderTimeout" json:"readHeaderTimeout"`
	IdleTimeout       time.Duration `yaml:"idleTimeout" json:"idleTimeout"`
	// HTTP2MaxStreamsPerConnection is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
	// the server announces. kube-apiserver's --http2-max-streams-per-connection
	// defaults to 0, which its secure serving turns into 100 (the Go client's
	// own initial limit); 1000 is only the default of aggregated apiservers.
	HTTP2MaxStreamsPerConnection int `yaml:"http2MaxStreamsPerConnection" json:"http2MaxStreamsPerConnection"`
	// JSONPatchMaxCopyBytes bounds how much a JSON patch's copy operations
	// may add to a document, as upstream's JSONPatchMaxCopyBytes (3 MiB,
	// the request body limit).
	JSONPatchMaxCopyBytes int64 `yaml:"jsonPatchMaxCopyBytes" json:"jsonPatchMaxCopyBytes"`
	// MaxWatches caps the watches open at once, and MaxWatchesPerUser the
	// watches one user holds; past either a new watch is answered 429.
	// Upstream has no such cap (its priority and fairness only meters how
	// watches start); these keep a runaway client from holding the
	// server's memory in watch buffers.
	MaxWatches        int `yaml:"maxWatches" json:"maxWatches"`
	MaxWatchesPerUser int `yaml:"maxWatchesPerUser" json:"maxWatchesPerUser"`
}

// Defaults of NewLimits.
const (
	DefaultMaxRequestsInFlight          = 400
	DefaultMaxMutatingRequestsInFlight  = 200
	DefaultRequestTimeout               = 60 * time.Second
	DefaultReadHeaderTimeout            = 32 * time.Second
	DefaultIdleTimeout                  = 90 * time.Second
	DefaultHTTP2MaxStreamsPerConnection = 100
	DefaultJSONPatchMaxCopyBytes        = maxBodyBytes
	DefaultMaxWatches                   = 20000
	DefaultMaxWatchesPerUser            = 2000
)

// maxJSONPatchOperations is upstream's fixed cap on the operations of one
// JSON patch (handlers/patch.go); more is a 413.
const maxJSONPatchOperations = 10000

// NewLimits returns the default limits.
func NewLimits() Limits {
	return Limits{
		MaxRequestsInFlight:          DefaultMaxRequestsInFlight,
		MaxMutatingRequestsInFlight:  DefaultMaxMutatingRequestsInFlight,
		RequestTimeout:               DefaultRequestTimeout,
		ReadHeaderTimeout:            DefaultReadHeaderTimeout,
		IdleTimeout:                  DefaultIdleTimeout,
		HTTP2MaxStreamsPerConnection: DefaultHTTP2MaxStreamsPerConnection,
		JSONPatchMaxCopyBytes:        DefaultJSONPatchMaxCopyBytes,
		MaxWatches:                   DefaultMaxWatches,
		MaxWatchesPerUser:            DefaultMaxWatchesPerUser,
	}
}

// withDefaults fills zero fields from NewLimits.
func (l Limits) withDefaults() Limits {
	d := NewLimits()
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&l.MaxRequestsInFlight, d.MaxRequestsInFlight)
	set(&l.MaxMutatingRequestsInFlight, d.MaxMutatingRequestsInFlight)
	set(&l.HTTP2MaxStreamsPerConnection, d.HTTP2MaxStreamsPerConnection)
	set(&l.MaxWatches, d.MaxWatches)
	set(&l.MaxWatchesPerUser, d.MaxWatchesPerUser)
	setD(&l.RequestTimeout, d.RequestTimeout)
	setD(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	setD(&l.IdleTimeout, d.IdleTimeout)
	if l.JSONPatchMaxCopyBytes == 0 {
		l.JSONPatchMaxCopyBytes = d.JSONPatchMaxCopyBytes
	}
	return l
}

// validate lists every invalid field under path (zero means the default
// and is valid).
func (l Limits) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	nonNeg := func(name string, v int64, shown any) {
		if v < 0 {
			errs = append(errs, field.Invalid(path.Child(name), shown, "must not be negative"))
		}
	}
	nonNeg("maxRequestsInFlight", int64(l.MaxRequestsInFlight), l.MaxRequestsInFlight)
	nonNeg("maxMutatingRequestsInFlight", int64(l.MaxMutatingRequestsInFlight), l.MaxMutatingRequestsInFlight)
	nonNeg("requestTimeout", int64(l.RequestTimeout), l.RequestTimeout.String())
	nonNeg("readHeaderTimeout", int64(l.ReadHeaderTimeout), l.ReadHeaderTimeout.String())
	nonNeg("idleTimeout", int64(l.IdleTimeout), l.IdleTimeout.String())
	nonNeg("jsonPatchMaxCopyBytes", l.JSONPatchMaxCopyBytes, l.JSONPatchMaxCopyBytes)
	nonNeg("maxWatches", int64(l.MaxWatches), l.MaxWatches)
	nonNeg("maxWatchesPerUser", int64(l.MaxWatchesPerUser), l.MaxWatchesPerUser)
	if v := l.HTTP2MaxStreamsPerConnection; v < 0 || v > 1<<20 {
		errs = append(errs, field.Invalid(path.Child("http2MaxStreamsPerConnection"), v, fmt.Sprintf("must be between 0 (the default, 100) and %d", 1<<20)))
	}
	if l.RequestTimeout > 0 && l.RequestTimeout < time.Second {
		errs = append(errs, field.Invalid(path.Child("requestTimeout"), l.RequestTimeout.String(), "must be at least 1s"))
	}
	if l.MaxWatches > 0 && l.MaxWatchesPerUser > l.MaxWatches {
		errs = append(errs, field.Invalid(path.Child("maxWatchesPerUser"), l.MaxWatchesPerUser, fmt.Sprintf("must not be more than maxWatches (%d)", l.MaxWatches)))
	}
	return errs
}

// setJSONPatchCopyLimit arms the json-patch library's copy bound, a package
// variable, as upstream's GenericAPIServer does: it only ever lowers a
// limit another server in the process set.
func setJSONPatchCopyLimit(n int64) {
	for n > 0 {
		cur := atomic.LoadInt64(&jsonpatch.AccumulatedCopySizeLimit)
		if cur > 0 && cur <= n {
			return
		}
		if atomic.CompareAndSwapInt64(&jsonpatch.AccumulatedCopySizeLimit, cur, n) {
			return
		}
	}
}

// inFlight holds the two in-flight semaphores.
type inFlight struct {
	readOnly, mutating chan struct{}
}

func newInFlight(l Limits) *inFlight {
	return &inFlight{readOnly: make(chan struct{}, l.MaxRequestsInFlight), mutating: make(chan struct{}, l.MaxMutatingRequestsInFlight)}
}

// acquire takes a slot for a request with this method; ok false means the
// server is full. release gives the slot back.
func (f *inFlight) acquire(method string) (release func(), ok bool) {
	c := f.mutating
	if method == http.MethodGet || method == http.MethodHead {
		c = f.readOnly
	}
	select {
	case c <- struct{}{}:
		return func() { <-c }, true
	default:
		return nil, false
	}
}

// tooManyRequests is upstream's answer past the in-flight cap: 429 and a
// Retry-After of one second.
func tooManyRequests() error {
	return apierrors.NewTooManyRequests("Too many requests, please try again later.", 1)
}

// watchCount counts open watches, in total and per user.
type watchCount struct {
	mu     sync.Mutex
	total  int
	byUser map[string]int
}

// open counts a watch for user unless a cap is reached; close undoes it.
func (c *watchCount) open(l Limits, user string) (close func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= l.MaxWatches || c.byUser[user] >= l.MaxWatchesPerUser {
		return nil, false
	}
	if c.byUser == nil {
		c.byUser = map[string]int{}
	}
	c.total++
	c.byUser[user]++
	return sync.OnceFunc(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.total--
		if c.byUser[user]--; c.byUser[user] <= 0 {
			delete(c.byUser, user)
		}
	}), true
}

// requestDeadline is the deadline of a request that is not a watch: the
// server's RequestTimeout, or a shorter positive ?timeout=, as upstream's
// WithRequestDeadline. A malformed timeout is a 400.
func requestDeadline(r *http.Request, max time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get("timeout")
	if v == "" {
		return max, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, apierrors.NewBadRequest("invalid timeout specified in the request URL - " + err.Error())
	}
	if d > 0 && d < max {
		return d, nil
	}
	return max, nil
}

// timeoutError is the 504 a request past its deadline gets, in upstream's
// words.
func timeoutError(err error) error {
	return apierrors.NewTimeoutError(fmt.Sprintf("request did not complete within requested timeout - %s", err), 0)
}

// isDeadline reports a context that ended by its deadline.
func isDeadline(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

// timeoutWriter buffers a handler's answer so that, past the deadline, the
// 504 can be written instead and whatever the handler still writes is
// dropped (the handler goes on until it notices its context ended).
type timeoutWriter struct {
	mu       sync.Mutex
	header   http.Header
	buf      bytes.Buffer
	code     int
	timedOut bool
}

func (tw *timeoutWriter) Header() http.Header { return tw.header }

func (tw *timeoutWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return 0, http.ErrHandlerTimeout
	}
	if tw.code == 0 {
		tw.code = http.StatusOK
	}
	return tw.buf.Write(p)
}

func (tw *timeoutWriter) WriteHeader(code int) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut || tw.code != 0 {
		return
	}
	tw.code = code
}

// withTimeout runs h with a deadline of d. Past it, an answer not yet
// given is a 504 Timeout Status, as upstream's timeout filter. The
// handler's goroutine is counted in wg, which the server waits for when it
// stops.
func withTimeout(w http.ResponseWriter, r *http.Request, d time.Duration, wg *sync.WaitGroup, h func(http.ResponseWriter, *http.Request)) {
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	r = r.WithContext(ctx)
	tw := &timeoutWriter{header: http.Header{}}
	done := make(chan struct{})
	panicc := make(chan any, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if p := recover(); p != nil {
				// Re-raised on the serving goroutine, with the stack of
				// the goroutine that panicked (as upstream's timeout filter).
				panicc <- fmt.Sprintf("%v\n%s", p, debug.Stack())
			}
		}()
		h(tw, r)
		close(done)
	}()
	select {
	case p := <-panicc:
		panic(p)
	case <-done:
		withTimeoutCopy(w, tw)
	case <-ctx.Done():
		select {
		case <-done: // finished just in time
			withTimeoutCopy(w, tw)
			return
		default:
		}
		tw.mu.Lock()
		tw.timedOut = true
		tw.mu.Unlock()
		writeError(w, timeoutError(ctx.Err()))
	}
}

// withTimeoutCopy sends what the handler wrote.
func withTimeoutCopy(w http.ResponseWriter, tw *timeoutWriter) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	dst := w.Header()
	for k, v := range tw.header {
		dst[k] = v
	}
	if tw.code == 0 {
		tw.code = http.StatusOK
	}
	w.WriteHeader(tw.code)
	_, _ = w.Write(tw.buf.Bytes())
}
