package dataplane

import wgtun "golang.zx2c4.com/wireguard/tun"

// StepOutbound and StepReceive expose one batch of each worker to the
// external tests, which drive the pipeline synchronously.
type Stepper interface{ Step() bool }

type outboundStepper struct{ w *outboundWorker }

func (s outboundStepper) Step() bool { return s.w.step() }

type receiveStepper struct{ w *receiveWorker }

func (s receiveStepper) Step() bool { return s.w.step() }

func (e *Engine) OutboundWorker(q wgtun.Device) Stepper {
	return outboundStepper{e.newOutboundWorker(q)}
}

func (e *Engine) ReceiveWorker(path int, q wgtun.Device) Stepper {
	return receiveStepper{e.newReceiveWorker(e.paths.Load().byID[path], q)}
}

// InboundEntries is how many SPIs receive, probe SAs included.
func (e *Engine) InboundEntries() int { return e.inbound.len() }

// CipherExpanded reports whether the SA holds its expanded cipher.
func (sa *SA) CipherExpanded() bool { return sa.aead.Load() != nil }

// ProbeSAMade reports whether the SA's probe SA exists (SetProbeSA gave
// it, or a probe made it from SetProbeSAConfig's).
func (sa *SA) ProbeSAMade() bool { return sa.probe.Load() != nil }
