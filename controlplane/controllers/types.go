package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Short names for the typed objects the garbage collector updates.
type (
	podT     = corev1.Pod
	rsT      = appsv1.ReplicaSet
	sliceT   = discoveryv1.EndpointSlice
	deployT  = appsv1.Deployment
	svcT     = corev1.Service
	dsT      = appsv1.DaemonSet
	stsT     = appsv1.StatefulSet
	revT     = appsv1.ControllerRevision
	jobT     = batchv1.Job
	cronJobT = batchv1.CronJob
)
