package wire

// Find returns the first payload of type T in ps, or the zero T (a nil
// pointer) when there is none.
func Find[T Payload](ps []Payload) T {
	for _, p := range ps {
		if t, ok := p.(T); ok {
			return t
		}
	}
	var zero T
	return zero
}

// FindAll returns every payload of type T in ps, in order.
func FindAll[T Payload](ps []Payload) []T {
	var found []T
	for _, p := range ps {
		if t, ok := p.(T); ok {
			found = append(found, t)
		}
	}
	return found
}

// FindNotify returns the first Notify payload of type t in ps, or nil.
func FindNotify(ps []Payload, t NotifyType) *Notify {
	for _, p := range ps {
		if n, ok := p.(*Notify); ok && n.NotifyType == t {
			return n
		}
	}
	return nil
}

// FindID returns the IDi (responder false) or IDr payload in ps, or nil.
func FindID(ps []Payload, responder bool) *ID {
	for _, p := range ps {
		if id, ok := p.(*ID); ok && id.Responder == responder {
			return id
		}
	}
	return nil
}

// FindTS returns the TSi (responder false) or TSr payload in ps, or nil.
func FindTS(ps []Payload, responder bool) *TS {
	for _, p := range ps {
		if ts, ok := p.(*TS); ok && ts.Responder == responder {
			return ts
		}
	}
	return nil
}
