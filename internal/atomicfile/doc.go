// Package atomicfile replaces a file's content so that a reader, or the
// file system after a crash, sees either the old content or the new one,
// never part of it: Write puts the data in a temporary file in the same
// folder with its final mode, syncs it, renames it over the target and
// syncs the folder so the rename itself survives a power loss.
//
// The PKI (keys, certificates, kubeconfigs), the in-process control
// plane's role configs and the installer's local files are written
// through it.
package atomicfile
