package apiserver

import (
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kforge.dev/kforge/controlplane/apiserver/storage"
)

// storageError maps a storage error to the API status a client expects.
func storageError(err error, gr schema.GroupResource, name string) error {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return apierrors.NewNotFound(gr, name)
	case errors.Is(err, storage.ErrAlreadyExists):
		return apierrors.NewAlreadyExists(gr, name)
	case errors.Is(err, storage.ErrConflict):
		return apierrors.NewConflict(gr, name, errors.New(storage.ErrConflict.Error()+"; please apply your changes to the latest version and try again"))
	case errors.Is(err, storage.ErrExpired):
		return apierrors.NewResourceExpired("too old resource version: " + err.Error())
	case errors.Is(err, storage.ErrBadContinue):
		return apierrors.NewBadRequest(err.Error())
	case isDeadline(err):
		return timeoutError(err)
	default:
		return apierrors.NewInternalError(fmt.Errorf("storage: %w", err))
	}
}
