// Package e2e holds kforge's end-to-end tests on the local lab. They run
// only when KFORGE_E2E=1 (make test-e2e sets it), so `go test ./...` stays
// fast; KFORGE_BINARY names the kforge binary they drive.
package e2e
