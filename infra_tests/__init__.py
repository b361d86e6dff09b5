"""Infrastructure tests: properties of the synthesized CloudFormation, cdk-nag and cfn-lint."""
