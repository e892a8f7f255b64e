package patch

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestLayoutMatchesHeader checks that the offsets the injected code uses
// (layout_amd64.h) are those the supervisor uses.
func TestLayoutMatchesHeader(t *testing.T) {
	goSide := map[string]int{
		"CTL_MAGIC": ctlMagic, "CTL_VERSION": ctlVersion, "CTL_FLAGS": ctlFlags, "CTL_ALIVE": ctlAlive,
		"CTL_PMFD": ctlPmfd, "CTL_SHADOW": ctlShadow, "CTL_VEC": ctlVec, "CTL_VECLEN": ctlVecLen,
		"CTL_TRAMP": ctlTramp, "CTL_DEPTH": ctlDepth, "CTL_FRP": ctlFrp, "CTL_FSLOT": ctlFslot,
		"CTL_FRET": ctlFret, "CTL_FRBX": ctlFrbx, "CTL_FRBP": ctlFrbp, "CTL_FR12": ctlFr12,
		"CTL_FR13": ctlFr13, "CTL_FR14": ctlFr14, "CTL_FR15": ctlFr15, "CTL_FMXCSR": ctlFmxcsr,
		"CTL_FFCW": ctlFfcw, "CTL_SELECTOR": ctlSelector, "CTL_PKEYMASK": ctlPkeyMask,
		"CTL_STACKLO": ctlStackLo, "CTL_CALLS": ctlCalls, "CTL_PAGES": ctlPages, "CTL_UNPROT": ctlUnprot,
		"CTL_SLOW": ctlSlow, "CTL_COMMITS": ctlCommits, "CTL_LONGJMPS": ctlLongjmps,
		"CTL_SCANERR": ctlScanErr, "CTL_NRANGES": ctlNRanges, "CTL_CODEBASE": ctlCodeBase, "CTL_OWNER": ctlOwner, "FLAG_MT": FlagMT, "CTL_CODELEN": ctlCodeLen, "CTL_FRAX": ctlFrax, "CTL_FRCX": ctlFrax + 8, "CTL_FRDX": ctlFrax + 16, "CTL_FRSI": ctlFrax + 24, "CTL_FRDI": ctlFrax + 32, "CTL_FR8": ctlFrax + 40, "CTL_FR9": ctlFrax + 48, "CTL_FR10": ctlFrax + 56, "CTL_FR11": ctlFrax + 64, "CTL_RANGES": ctlRanges,
		"RANGE_START": rangeStart, "RANGE_END": rangeEnd, "RANGE_OFF": rangeOff, "RANGE_FLAGS": rangeFlags,
		"RANGE_SIZE": rangeSize, "MAX_RANGES": MaxRanges, "CTL_RPTAB": ctlRPTab, "RP_BACK": rpBack,
		"RP_TRAP": rpTrap, "RP_CALLS": rpCalls, "RP_CKPTS": rpCkpts, "RP_SHIFT": rpShift,
		"FLAG_FAST": FlagFast, "FLAG_READY": FlagReady, "FLAG_BROKEN": FlagBroken, "FLAG_PKEY": FlagPkey, "FLAG_STALE": FlagStale, "FLAG_LAYOUT": FlagLayout,
		"RANGE_SHARED": RangeShared, "FUTEX_OWNER_DIED": futexOwnerDied,
	}
	f, err := os.Open("layout_amd64.h")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 || fs[0] != "#define" {
			continue
		}
		want, ok := goSide[fs[1]]
		if !ok {
			continue // struct pm_scan_arg and ucontext offsets: kernel ABI
		}
		got, err := strconv.ParseInt(fs[2], 0, 64)
		if err != nil {
			t.Fatalf("%s: %v", fs[1], err)
		}
		if int(got) != want {
			t.Errorf("%s is %d in layout_amd64.h, %d in layout.go", fs[1], got, want)
		}
		seen[fs[1]] = true
	}
	for name := range goSide {
		if !seen[name] {
			t.Errorf("%s is not defined in layout_amd64.h", name)
		}
	}
	if ctlVecStart+vecEntries*vecEntry > CtlSize || ctlRanges+MaxRanges*rangeSize > ctlRPTab {
		t.Fatal("the control block's parts overlap")
	}
}
