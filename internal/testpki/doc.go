// Package testpki is a small certificate authority for tests, including
// integration tests against strongSwan: a CA, an optional intermediate CA,
// a gateway and a client certificate, written as PEM files. strongSwan
// accepts a peer only when its certificate contains the peer's identity,
// so the gateway certificate carries its name as a DNS subjectAltName and
// the client certificate its email address as an rfc822Name
// subjectAltName. Only tests import it: it is not part of the product.
package testpki
