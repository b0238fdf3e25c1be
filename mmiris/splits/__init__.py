"""Train/validation/test splits with stored negatives."""

from mmiris.splits.leave_one_out import LeaveOneOut, leave_one_out, sample_negatives

__all__ = ["LeaveOneOut", "leave_one_out", "sample_negatives"]
