package clusterdns

import "testing"

// StartUpstream runs the fake upstream for the integration tests and
// returns its address.
func StartUpstream(t *testing.T) string { return startUpstream(t).addr }
