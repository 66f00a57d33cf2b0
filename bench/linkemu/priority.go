package linkemu

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// PrioritizeProcess sets the nice value of every thread of the calling
// process to nice (threads started later inherit it from the thread that
// starts them). It needs CAP_SYS_NICE for values below the current one.
//
// The emulator's own threads already run at a raised priority, but each
// of them needs one of the Go runtime's Ps (GOMAXPROCS) after every
// blocking system call, and a P may be held by another thread of the
// process that the kernel does not schedule while the machine is busy: the
// emulator then waits for it. On a 2-core machine loaded by the lab's
// endpoints this made packets up to hundreds of milliseconds late; a
// process that runs emulated links should call PrioritizeProcess once at
// start to avoid it (this package's tests do; `mifsec lab` does not yet).
func PrioritizeProcess(nice int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("linkemu: listing the threads of the process: %w", err)
	}
	var errs []error
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("linkemu: setting nice %d on thread %d: %w", nice, tid, err))
		}
	}
	return errors.Join(errs...)
}
