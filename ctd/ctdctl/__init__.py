"""ctdctl, the command-line client of the control socket."""
