// Package sqltext writes the names and literals that pgrules puts into the
// SQL it generates: quoted identifiers, string literals that read the same
// under any standard_conforming_strings, qualified table names, and the
// join condition of a foreign key.
//
// It is shared by the compiler (rules/compiler), which translates rule
// expressions to SQL, and the engine (rules), which builds its statements.
// It knows only the catalog's tables and foreign keys: nothing of
// connections, expressions or the rules.
package sqltext
