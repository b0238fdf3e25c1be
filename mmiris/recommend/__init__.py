"""Top-N recommendation and explanations over a trained model (stage: ``mmiris.pipelines.recommend``)."""
