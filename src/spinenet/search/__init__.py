"""Architecture search (paper section 3, spec section 6): spaces, strategies, journal, runner, proxy task."""
