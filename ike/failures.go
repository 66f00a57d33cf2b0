package ike

import "github.com/mifsec/mifsec/ike/wire"
import "errors"

// Reasons for which an IKE SA could not be set up or was lost, as
// Status.Failures (the initiator) and Responder.Failures (the gateway)
// count them.
const (
	FailAuthentication = "authentication"  // AUTHENTICATION_FAILED: credentials refused
	FailNoProposal     = "no-proposal"     // NO_PROPOSAL_CHOSEN: no common algorithms
	FailTSUnacceptable = "ts-unacceptable" // TS_UNACCEPTABLE: no common traffic selectors
	FailNoAddress      = "no-address"      // INTERNAL_ADDRESS_FAILURE, FAILED_CP_REQUIRED: no inner address
	FailInvalidSyntax  = "invalid-syntax"  // INVALID_SYNTAX: a malformed request
	FailTimeout        = "timeout"         // the peer answered none of a request's retransmissions
	FailHalfOpenLimit  = "half-open-limit" // IKE_SA_INIT dropped: too many half-open IKE SAs
	FailDHBudget       = "dh-budget"       // IKE_SA_INIT dropped: Diffie-Hellman budget spent
	FailUnavailable    = "unavailable"     // TEMPORARY_FAILURE: the gateway could not take the client (full or draining with nowhere to redirect to, redirect.go; or its data plane refused the Child SA)
	FailInboxFull      = "inbox-full"      // a datagram within an IKE SA dropped on arrival: the responder's queue was full (Responder.Deliver)
	FailInitQueueFull  = "init-queue-full" // an IKE_SA_INIT dropped on arrival: the responder's queue of new clients' requests was full
	FailSuperseded     = "superseded"      // an IKE_AUTH with INITIAL_CONTACT refused (TEMPORARY_FAILURE): the client had since set up a newer IKE SA, which it would have dropped
	FailOther          = "other"
)

// FailureReasons lists every reason a failure is counted under.
var FailureReasons = []string{FailAuthentication, FailNoProposal, FailTSUnacceptable, FailNoAddress,
	FailInvalidSyntax, FailTimeout, FailHalfOpenLimit, FailDHBudget, FailUnavailable, FailInboxFull, FailInitQueueFull, FailSuperseded, FailOther}

// notifyFailure names the failure an error notification reports.
func notifyFailure(n wire.NotifyType) string {
	switch n {
	case wire.AUTHENTICATION_FAILED:
		return FailAuthentication
	case wire.NO_PROPOSAL_CHOSEN:
		return FailNoProposal
	case wire.TS_UNACCEPTABLE:
		return FailTSUnacceptable
	case wire.INTERNAL_ADDRESS_FAILURE, wire.FAILED_CP_REQUIRED:
		return FailNoAddress
	case wire.INVALID_SYNTAX:
		return FailInvalidSyntax
	case wire.TEMPORARY_FAILURE:
		return FailUnavailable
	}
	return FailOther
}

// errorFailure names the failure a Session's error reports.
func errorFailure(err error) string {
	switch {
	case errors.Is(err, ErrAuthFailed):
		return FailAuthentication
	case errors.Is(err, ErrNoProposalChosen):
		return FailNoProposal
	case errors.Is(err, ErrTimeout):
		return FailTimeout
	case errors.Is(err, ErrUnavailable):
		return FailUnavailable
	}
	return FailOther
}
