META
key;value
description;An excerpt of a ranked round with a blank ballot and extra columns after the vote
country;Nowhere
unit;Test
instance;2026
num_projects;6
num_votes;5000
budget;1000
vote_type;ordinal
min_length;3
max_length;3
PROJECTS
project_id;cost;votes;name
x1;300;4;Tree planting
x2;450;3;Outdoor gym
x3;200;3;Mural
x4;600;2;Footbridge
x5;250;2;Toy library
x6;150;1;Drinking fountain
VOTES
voter_id;vote;voting_method;district
1;x1,x2,x3;paper;North
2;x4,x1,x5;internet;South
3;x3,x2,x1;internet;North
4;;paper;East
5;x5,x4,x6;internet;West
6;x2,x3,x1;paper;South
