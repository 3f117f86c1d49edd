package spore

// WaitAbandoned waits until every goroutine that untilDone left behind, when
// its caller's context ended, has dropped what its work returned. Tests use
// it to tell "a late process was killed" from "not yet started".
func WaitAbandoned() { abandoned.Wait() }
