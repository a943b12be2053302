// Package etcdtest starts a one-member embedded etcd for tests of the
// apiserver and its storage: a real datastore, never a mock.
package etcdtest
