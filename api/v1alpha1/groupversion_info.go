// Package v1alpha1 holds the holdfast.dev/v1alpha1 API: the custom resources
// users write, with the validation the API server enforces at admission.
//
// +kubebuilder:object:generate=true
// +groupName=holdfast.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "holdfast.dev", Version: "v1alpha1"}

var (
	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&PostgresCluster{}, &PostgresClusterList{},
		&Backup{}, &BackupList{},
		&BackupSchedule{}, &BackupScheduleList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
