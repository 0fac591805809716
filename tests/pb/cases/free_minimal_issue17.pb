META
key;value
description;Issue 17: the smallest election where a free project splits civicbot and pabutools
country;Nowhere
unit;Test
instance;2026
num_projects;4
num_votes;3
budget;2
vote_type;approval
rule;equalshares
PROJECTS
project_id;cost;name
a;0;Free and approved
b;1;Cheap
c;2;Dear
z;0;Free and nobody's choice
VOTES
voter_id;vote
1;a,b
2;a,c
3;b
