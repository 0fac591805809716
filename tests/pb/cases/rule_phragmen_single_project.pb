META
key;value
description;pabutools rule test_phragmen: one project, one voter
country;Nowhere
unit;Test
instance;2026
num_projects;1
num_votes;1
budget;1
vote_type;approval
rule;unknown
PROJECTS
project_id;cost;name
p;1;P
VOTES
voter_id;vote
v01;p
