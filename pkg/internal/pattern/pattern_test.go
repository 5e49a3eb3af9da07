package pattern

import (
	"testing"
)

func TestLazyCompilesOnceOnFirstUse(t *testing.T) {
	re := Lazy(`^[a-z]{1,3}$`)
	first := re()
	if !first.MatchString("abc") || first.MatchString("abcd") {
		t.Fatalf("%s matches wrongly", first)
	}
	if re() != first {
		t.Fatal("second call compiled again")
	}
}

func TestLazyPanicsOnFirstUseOfABadExpression(t *testing.T) {
	re := Lazy(`(`) // creating it must not panic
	defer func() {
		if recover() == nil {
			t.Fatal("a bad expression did not panic on use")
		}
	}()
	re()
}
