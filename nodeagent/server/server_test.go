package server

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestAttributes(t *testing.T) {
	for _, tc := range []struct {
		method, path, verb string
		subs               []string
	}{
		{"GET", "/healthz", "get", []string{"healthz", "proxy"}},
		{"GET", "/metrics", "get", []string{"metrics"}},
		{"GET", "/metrics/cadvisor", "get", []string{"metrics"}},
		{"GET", "/stats/summary", "get", []string{"stats"}},
		{"GET", "/logs/syslog", "get", []string{"log"}},
		{"GET", "/containerLogs/ns/p/c", "get", []string{"proxy"}},
		{"POST", "/exec/ns/p/c", "create", []string{"proxy"}},
		// A WebSocket exec is a GET and still needs create.
		{"GET", "/exec/ns/p/c", "create", []string{"proxy"}},
		{"GET", "/attach/ns/p/c", "create", []string{"proxy"}},
		{"GET", "/portForward/ns/p", "create", []string{"proxy"}},
		{"DELETE", "/pods", "delete", []string{"proxy"}},
	} {
		verb, subs := attributes(httptest.NewRequest(tc.method, tc.path, nil))
		if verb != tc.verb || len(subs) != len(tc.subs) || subs[0] != tc.subs[0] {
			t.Errorf("%s %s: %s %v, want %s %v", tc.method, tc.path, verb, subs, tc.verb, tc.subs)
		}
	}
}

func TestLogOptions(t *testing.T) {
	o, prev, err := logOptions(httptest.NewRequest("GET", "/containerLogs/a/b/c?follow=true&tailLines=5&timestamps=1&previous=true&limitBytes=10&sinceSeconds=60", nil))
	if err != nil || !o.Follow || *o.TailLines != 5 || !o.Timestamps || !prev || *o.LimitBytes != 10 || time.Since(o.Since) < 59*time.Second {
		t.Fatalf("%+v %v %v", o, prev, err)
	}
	o, _, err = logOptions(httptest.NewRequest("GET", "/x?sinceTime=2026-01-02T03:04:05Z", nil))
	if err != nil || !o.Since.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("sinceTime: %+v %v", o, err)
	}
	for _, q := range []string{"follow=maybe", "tailLines=x", "limitBytes=0", "sinceSeconds=0", "sinceSeconds=5&sinceTime=2026-01-02T03:04:05Z", "sinceTime=yesterday"} {
		if _, _, err := logOptions(httptest.NewRequest("GET", "/x?"+q, nil)); err == nil {
			t.Errorf("%s accepted", q)
		}
	}
}
