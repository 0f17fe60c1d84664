"""What more than one test uses: in-memory worlds, protocol writers from
the spec. Tests import from here, never from another test module (a test
module is not a library: pytest may import it under another name)."""
