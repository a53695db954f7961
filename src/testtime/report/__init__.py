"""What a finished run says: summaries and the HTML report, paired comparisons, Kaggle submissions."""
