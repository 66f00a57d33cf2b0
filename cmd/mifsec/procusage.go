package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// processUsage is what /proc says of a process: its resident memory and
// the CPU time it used so far (user and system).
type processUsage struct {
	RSSkB int           `json:"rss_kb"`
	PsskB int           `json:"pss_kb"`
	CPU   time.Duration `json:"cpu_ns"`
}

// userHZ is the unit of the times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture's user-visible interface.
const userHZ = 100

// readProcessUsage reads pid's VmRSS (/proc/PID/status), Pss
// (/proc/PID/smaps_rollup) and utime+stime (/proc/PID/stat).
func readProcessUsage(pid int) (processUsage, error) {
	var u processUsage
	field := func(file, name string) (int, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			return 0, err
		}
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == name+":" {
				v, err := strconv.Atoi(f[1])
				if err != nil {
					return 0, fmt.Errorf("/proc/%d/%s %s: %w", pid, file, name, err)
				}
				return v, nil
			}
		}
		return 0, fmt.Errorf("no %s in /proc/%d/%s", name, pid, file)
	}
	var err error
	if u.RSSkB, err = field("status", "VmRSS"); err != nil {
		return u, err
	}
	if u.PsskB, err = field("smaps_rollup", "Pss"); err != nil {
		return u, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name, in parentheses, may hold spaces: the fields are
	// counted after its closing parenthesis (state is field 3, utime 14,
	// stime 15).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	u.CPU = time.Duration(ticks) * time.Second / userHZ
	return u, nil
}
