package ike

import "github.com/mifsec/mifsec/ike/wire"

// inSARequests is what a role (the client's Session, the gateway's
// Responder) answers requests on an established IKE SA with. IKESA is the
// role's IKE SA type and After what it runs once the response is sent.
type inSARequests[IKESA, After any] interface {
	respondInformational(sa IKESA, req []wire.Payload) ([]wire.Payload, After)
	respondChildRekey(sa IKESA, rekey *wire.Notify, req []wire.Payload) ([]wire.Payload, After)
	respondIKERekey(sa IKESA, req []wire.Payload) ([]wire.Payload, After)
}

// dispatchInSARequest is the one dispatch of CREATE_CHILD_SA and
// INFORMATIONAL requests for both roles: a CREATE_CHILD_SA with REKEY_SA
// rekeys a Child SA, one whose first proposal is for IKE rekeys the IKE SA,
// and any other asks for an additional Child SA, which mifsec refuses (it
// runs one Child SA per IKE SA).
func dispatchInSARequest[IKESA, After any](role inSARequests[IKESA, After], sa IKESA, exchange wire.ExchangeType, req []wire.Payload) ([]wire.Payload, After) {
	var nothing After
	switch exchange {
	case wire.INFORMATIONAL:
		return role.respondInformational(sa, req)
	case wire.CREATE_CHILD_SA:
		if n := wire.FindNotify(req, wire.REKEY_SA); n != nil {
			return role.respondChildRekey(sa, n, req)
		}
		if p := wire.Find[*wire.SA](req); p != nil && len(p.Proposals) > 0 && p.Proposals[0].Protocol == wire.ProtoIKE {
			return role.respondIKERekey(sa, req)
		}
		return []wire.Payload{&wire.Notify{NotifyType: wire.NO_ADDITIONAL_SAS}}, nothing
	}
	return []wire.Payload{&wire.Notify{NotifyType: wire.INVALID_SYNTAX}}, nothing
}
