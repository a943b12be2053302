//go:build race

package apiserver

// raceDetector says the tests run under -race, which slows them.
const raceDetector = true
