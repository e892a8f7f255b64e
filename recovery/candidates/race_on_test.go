//go:build race

package candidates

// raceScale stretches time limits: the race detector slows decoding
// about tenfold.
const raceScale = 10
