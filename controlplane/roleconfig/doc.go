// Package roleconfig holds what every role's config file shares.
//
// A role's config type (etcd, apiserver, lb, scheduler, controller
// manager) implements Config: FilePaths and Validate. Parse and Load are
// the one loader: strict YAML decoding over the role's defaults (an
// unknown field, an empty file or a second document is an error),
// relative paths resolved against the file's folder, then validation
// that returns every problem at once, each with its field, as a
// field.ErrorList wrapped in an *Error naming the role. Marshal is the
// inverse an installer uses: it builds the config as a typed struct from
// the role's NewConfig and writes the document Parse reads back
// unchanged.
//
// The leader-elected roles (scheduler, controller manager) share their
// LeaderElection settings and their defaults here.
package roleconfig
