"""The business-rule language: parser and compiler."""
