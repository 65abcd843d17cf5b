//! Time windows and statistics (being written).
