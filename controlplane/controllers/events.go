package controllers

import (
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
)

// Reporting controller names of the events each controller records, as
// upstream's controllers name themselves.
const (
	reporterReplicaSet    = "replicaset-controller"
	reporterDeployment    = "deployment-controller"
	reporterDaemonSet     = "daemonset-controller"
	reporterStatefulSet   = "statefulset-controller"
	reporterNodeLifecycle = "node-controller"
	reporterJob           = "job-controller"
	reporterCronJob       = "cronjob-controller"
)

// noEvents drops every event: controllers built outside a Manager (unit
// tests) record into it until the Manager gives them a recorder.
var noEvents events.EventRecorder = &events.FakeRecorder{}

// newRecorder is a recorder on the manager's one broadcaster that
// reports as reporter.
func newRecorder(b events.EventBroadcaster, reporter string) events.EventRecorder {
	return b.NewRecorder(scheme.Scheme, reporter)
}
