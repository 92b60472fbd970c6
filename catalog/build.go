package catalog

// NewTable returns a table with its columns indexed by name. Foreign keys
// are added with Snapshot.link (or NewSnapshot).
func NewTable(schema, name string, cols []*Column, pk []string) *Table {
	t := &Table{Schema: schema, Name: name, Columns: cols, PrimaryKey: pk, columns: make(map[string]*Column, len(cols))}
	for _, c := range cols {
		t.columns[c.Name] = c
	}
	if len(pk) > 0 {
		// Its index, under the name PostgreSQL gives it by default; Load
		// replaces the list with the table's indexes.
		t.Uniques = []*Unique{{Index: name + "_pkey", Constraint: name + "_pkey", Columns: pk}}
	}
	return t
}

// NewSnapshot builds a snapshot from tables, foreign keys and rules, for
// tests and tools: the foreign keys are linked into their tables.
func NewSnapshot(database string, tables []*Table, fks []*ForeignKey, rules []*Rule) *Snapshot {
	s := &Snapshot{Database: database, Tables: make(map[string]*Table), Rules: rules, SearchPath: []string{"public"}}
	for _, t := range tables {
		s.Tables[t.QualifiedName()] = t
	}
	for _, fk := range fks {
		s.link(fk)
	}
	return s
}

// link adds a foreign key to its child's Parents and its parent's Children.
func (s *Snapshot) link(fk *ForeignKey) {
	if c := s.Tables[fk.Child]; c != nil {
		c.Parents = append(c.Parents, fk)
	}
	if p := s.Tables[fk.Parent]; p != nil {
		p.Children = append(p.Children, fk)
	}
}
