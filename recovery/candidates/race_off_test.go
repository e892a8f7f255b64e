//go:build !race

package candidates

// raceScale stretches time limits under the race detector (see
// race_on_test.go).
const raceScale = 1
