// Command kubectl is the real kubectl, built from k8s.io/kubectl at the
// version kforge promises to work with, for kforge's kubectl test suite.
// It is a test tool: its own module, never part of the kforge binary.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
