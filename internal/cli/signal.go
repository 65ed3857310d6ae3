package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// One place handles the signals of every tool:
//
//   - SIGINT and SIGTERM cancel the command's context, remove every temporary
//     output registered with OnInterrupt, wait for work that holds the exit
//     (Hold: place removing its partial checkpoint), print "tool: interrupted"
//     and end the process by the same signal, so that the shell reports 130 or
//     143 and a script sees the interruption.
//   - SIGPIPE ends a tool whose stdout's reader went away, quietly, as it
//     ends cat (status 141 in a shell): it writes no temporary file on stdout.
//     A tool that must finish its work anyway (place, whose checkpoint does
//     not depend on the next stage) calls PassSIGPIPE first: the write then
//     fails with EPIPE and the tool decides.
var (
	cleanMu     sync.Mutex
	cleanups    = map[int]func(){}
	cleanNext   int
	holds       sync.WaitGroup
	interrupted atomic.Bool
)

// OnInterrupt registers f to run if the process is interrupted; drop forgets it.
func OnInterrupt(f func()) (drop func()) {
	cleanMu.Lock()
	defer cleanMu.Unlock()
	return onInterruptLocked(f)
}

// createTemp is os.CreateTemp with the file's removal registered before an
// interruption can look: no signal falls between the two.
func createTemp(dir, pattern string) (*os.File, func(), error) {
	cleanMu.Lock()
	defer cleanMu.Unlock()
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, nil, err
	}
	name := f.Name()
	return f, onInterruptLocked(func() { os.Remove(name) }), nil
}

func onInterruptLocked(f func()) (drop func()) {
	id := cleanNext
	cleanNext++
	cleanups[id] = f
	return func() {
		cleanMu.Lock()
		delete(cleanups, id)
		cleanMu.Unlock()
	}
}

// Hold delays the exit after an interruption until release is called: for a
// command that watches its context and cleans up after itself.
func Hold() (release func()) {
	holds.Add(1)
	var once sync.Once
	return func() { once.Do(holds.Done) }
}

// PassSIGPIPE makes a write to a closed pipe return EPIPE instead of ending
// the process; Run ends a tool that returns EPIPE quietly with status 0.
func PassSIGPIPE() { signal.Ignore(syscall.SIGPIPE) }

// Interrupted reports whether SIGINT or SIGTERM has arrived.
func Interrupted() bool { return interrupted.Load() }

func runCleanups() {
	cleanMu.Lock()
	fs := make([]func(), 0, len(cleanups))
	for id, f := range cleanups {
		fs = append(fs, f)
		delete(cleanups, id)
	}
	cleanMu.Unlock()
	for _, f := range fs {
		f()
	}
}

// signalContext installs the handling above for the tool called name.
func signalContext(name string, stderr interface{ Write([]byte) (int, error) }) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		var sig os.Signal
		select {
		case sig = <-ch:
		case <-done:
			return
		}
		interrupted.Store(true)
		cancel()
		runCleanups()
		holds.Wait()
		runCleanups()
		fmt.Fprintf(stderr, "%s: interrupted\n", name)
		s, _ := sig.(syscall.Signal)
		signal.Reset(s)
		raise(s)
		// The signal ends the process as it arrives; should it have been
		// ignored when the process started, the status says it all the same.
		time.Sleep(time.Second)
		os.Exit(128 + int(s))
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}
