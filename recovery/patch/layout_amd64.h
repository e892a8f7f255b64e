// Layout of the control block the injected code shares with the
// supervisor (a memfd mapped in both). layout.go holds the same numbers
// for Go; TestLayoutMatchesHeader keeps the two in step.

#define CTL_MAGIC      0
#define CTL_VERSION    8
#define CTL_FLAGS      12
#define CTL_ALIVE      16
#define CTL_PMFD       20
#define CTL_SHADOW     24
#define CTL_VEC        32
#define CTL_VECLEN     40
#define CTL_TRAMP      48
#define CTL_DEPTH      56
#define CTL_FRP        60
#define CTL_FSLOT      64
#define CTL_FRET       72
#define CTL_FRBX       80
#define CTL_FRBP       88
#define CTL_FR12       96
#define CTL_FR13       104
#define CTL_FR14       112
#define CTL_FR15       120
#define CTL_FMXCSR     128
#define CTL_FFCW       132
#define CTL_SELECTOR   136
#define CTL_PKEYMASK   140
#define CTL_STACKLO    144
#define CTL_CALLS      152
#define CTL_PAGES      160
#define CTL_UNPROT     168
#define CTL_SLOW       176
#define CTL_COMMITS    184
#define CTL_LONGJMPS   192
#define CTL_SCANERR    200
#define CTL_NRANGES    208
#define CTL_CODEBASE   224
#define CTL_CODELEN    232
#define CTL_OWNER      240
// The caller-saved registers at the frame's entry (rbx, rbp, r12-r15 are
// at CTL_FRBX..): with gcc's interprocedural register allocation a
// caller may keep values in registers its callee does not touch.
#define CTL_FRAX       256
#define CTL_FRCX       264
#define CTL_FRDX       272
#define CTL_FRSI       280
#define CTL_FRDI       288
#define CTL_FR8        296
#define CTL_FR9        304
#define CTL_FR10       312
#define CTL_FR11       320
#define CTL_RANGES     1024

#define RANGE_START    0
#define RANGE_END      8
#define RANGE_OFF      16
#define RANGE_FLAGS    24
#define RANGE_SIZE     32
#define MAX_RANGES     200

#define CTL_RPTAB      8192
#define RP_BACK        0
#define RP_TRAP        8
#define RP_CALLS       16
#define RP_CKPTS       24
#define RP_SHIFT       5

#define FLAG_FAST      1
#define FLAG_READY     2
#define FLAG_BROKEN    4
#define FLAG_PKEY      8
#define FLAG_STALE     16
#define FLAG_LAYOUT    32
#define FLAG_MT        64

#define RANGE_SHARED   1

#define FUTEX_OWNER_DIED 0x40000000

// struct pm_scan_arg (linux/fs.h), built on the stack.
#define ARG_SIZE       0
#define ARG_FLAGS      8
#define ARG_START      16
#define ARG_END        24
#define ARG_WALKEND    32
#define ARG_VEC        40
#define ARG_VECLEN     48
#define ARG_MAXPAGES   56
#define ARG_INV        64
#define ARG_MASK       72
#define ARG_ANYOF      80
#define ARG_RET        88
#define ARG_BYTES      96

// ucontext_t offsets of the saved rip and rax (x86-64).
#define UC_RAX         144
#define UC_RIP         168
