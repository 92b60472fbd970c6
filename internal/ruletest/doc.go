// Package ruletest holds the fixtures that the tests of the rules
// compiler and of the engine share: the check-credit schema and its rules,
// built by hand, without a database.
package ruletest
