"""lmms-eval adapters (the only package importing lmms_eval): model classes, model_args, stats."""
