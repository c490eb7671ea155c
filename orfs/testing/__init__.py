"""What the test suite and the benchmark scripts share to run real processes.

Not used by the mount itself (an import-linter contract keeps it so); it lives in the
package so that scripts/ can import it from the installed orfs.
"""
