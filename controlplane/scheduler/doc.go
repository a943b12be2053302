// Package scheduler is the kforge scheduler (`kforge scheduler --config
// FILE` on each master, and in-process in `kforge local up`). It places
// the pods whose spec.schedulerName is its name (default-scheduler) on
// nodes. It owns:
//
//   - Config: the role config (/etc/kforge/scheduler.yaml, kind
//     SchedulerConfig) in the shape of etcd's embed.Config: NewConfig
//     fills defaults, LoadConfig decodes a file strictly over them,
//     Validate lists every problem before anything starts.
//   - Scheduler: New (or NewWithRESTConfig), Run(ctx), Ready, Handler. It
//     follows sample-controller: informers on pods (all of them: the
//     pods bound to a node are what the node uses) and nodes; handlers
//     only enqueue pod keys; one worker drains a rate-limited queue and
//     sync reads the listers. One worker keeps placements sequential, so
//     each sees what the previous one took; binds the informer has not
//     shown yet are "assumed" and counted.
//   - Filters (filter.go), in order, stopping at the first that fails:
//     the node's Ready condition is True (a node with no conditions is
//     not ready); not cordoned (unless the pod tolerates
//     node.kubernetes.io/unschedulable); nodeSelector and required node
//     affinity (In, NotIn, Exists, DoesNotExist, Gt, Lt; matchFields on
//     metadata.name); NoSchedule/NoExecute taints against tolerations
//     (upstream's Toleration.ToleratesTaint); host port conflicts;
//     requests (containers, init containers, sidecars, overhead, as
//     upstream sums them) of the non-terminated pods on the node plus
//     the pod's against allocatable cpu, memory and pods.
//   - Scores: least allocated plus balanced cpu/memory plus, weighted
//     twice, spread of the pods of the same controller; ties go to the
//     nodes in name order from a start that moves on each placement.
//   - Binding through pods/binding and a "Scheduled" event
//     (events.k8s.io/v1). A 409 on bind means another instance bound the
//     pod first: counted as a conflict, not an error. With no feasible
//     node: PodScheduled=False, reason Unschedulable, an upstream-style
//     message ("0/3 nodes are available: 1 node(s) had untolerated taint
//     {x: y}, 2 Insufficient cpu."), a FailedScheduling event, and a retry
//     with backoff (0.5 s doubling to 10 s); a node added or changed in
//     what the filters read, or a bound pod deleted, retries every
//     pending pod at once.
//   - Leader election through the Lease kube-system/kforge-scheduler
//     (15 s / 10 s / 2 s); only the leader runs the worker. On shutdown
//     the worker stops first, then the lease is released, so a standby
//     takes over within one retry period. A lost lease stops the worker
//     and Run returns roleconfig.ErrLeaseLost: the process exits non-zero
//     and systemd restarts it with empty caches, as upstream does.
//   - The health server on HealthAddress (plain HTTP, 127.0.0.1:10259):
//     /healthz, /readyz (informers synced, leading or standing by) and
//     /metrics from the scheduler's own registry:
//     kforge_scheduler_schedule_attempts_total{result},
//     kforge_scheduler_e2e_scheduling_duration_seconds,
//     kforge_scheduler_pending_pods and kforge_scheduler_leader.
//
// Not done yet: preemption, inter-pod affinity and topology spread
// constraints, preferred node affinity, volumes, extended resources.
package scheduler
