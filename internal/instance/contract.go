package instance

import "holdfast.dev/holdfast/internal/instance/api"

// The contract with the operator lives in package api, which the operator
// imports without linking this manager; these names keep the manager's
// own code as it reads best.
type (
	Desired        = api.Desired
	LeaseTerms     = api.LeaseTerms
	Report         = api.Report
	Rejoin         = api.Rejoin
	Adoption       = api.Adoption
	ArchiveReport  = api.ArchiveReport
	ArchiveOrder   = api.ArchiveOrder
	BackupOrder    = api.BackupOrder
	BackupReport   = api.BackupReport
	RestoreOrder   = api.RestoreOrder
	PromiseRequest = api.PromiseRequest
	PromiseReport  = api.PromiseReport
	FailsafeReport = api.FailsafeReport
	Resumption     = api.Resumption
	VolumeUsage    = api.VolumeUsage
)

const (
	ResumedOnLease       = api.ResumedOnLease
	DataVolume           = api.DataVolume
	ResumedOnPromises    = api.ResumedOnPromises
	RejoinArchive        = api.RejoinArchive
	RejoinReclone        = api.RejoinReclone
	MethodLogical        = api.MethodLogical
	MethodVolumeSnapshot = api.MethodVolumeSnapshot
	MethodPGBackRest     = api.MethodPGBackRest
	JobRunning           = api.JobRunning
	JobCompleted         = api.JobCompleted
	JobFailed            = api.JobFailed
	StatusPort           = api.StatusPort
	APIPort              = api.APIPort
	MetricsPort          = api.MetricsPort
	StartupPath          = api.StartupPath
	LivenessPath         = api.LivenessPath
	ReadinessPath        = api.ReadinessPath
	StatusPath           = api.StatusPath
	DesiredPath          = api.DesiredPath
	BackupsPath          = api.BackupsPath
	PromisePath          = api.PromisePath
)
